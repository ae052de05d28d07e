"""Saving LoRA files and resumable state, restoring a run from its state, and recording how the run ended (part
of the Trainer)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..lora import network as net
from ..lora.kohya_format import SAVE_DTYPES, model_hash, save_lora
from ..lora.metadata import build_metadata, source_hashes
from ..failures import free_bytes, free_space_text, size_text
from .state import load_state, save_state, state_bytes


class TrainingFailed(Exception):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code



class CheckpointMixin:
    def lora_tensors(self, models, fmt: str = "kohya") -> dict[str, torch.Tensor]:
        return self.comps.family.lora_tensors(models, self.spec, self.conv_modules, SAVE_DTYPES[self.cfg.save_precision], fmt)

    def _save_lora(self, models, suffix: str, kind: str, epoch: int) -> Path:
        if not self.main:
            return self.run.lora_path(suffix)
        ts = self.ts
        meta = build_metadata(self.cfg, self.comps.family, epoch=epoch, step=self.global_step, num_epochs=self.epochs,
                              num_images=ts.n_train, dataset_dirs=ts.folder_stats(), tag_frequency=ts.tag_frequency(),
                              started_at=self.started_at, base_model_name=Path(self.cfg.pretrained_model_name_or_path).name)
        meta.update(self.comps.family.metadata(self.comps, self.cfg))
        meta.update(source_hashes(self.cfg.pretrained_model_name_or_path, [it.path for it in ts.items[: ts.n_train]]))
        if ts.val_indices:  # measured before saving, so that the file records it
            meta["ss_validation_loss"] = f"{self._validation_loss():.6f}"
        tensors = self.lora_tensors(models)
        meta["sshs_model_hash"] = model_hash(tensors)
        path = save_lora(self.run.lora_path(suffix), tensors, meta)  # a full disk: core.failures.DiskFull
        self._room_for_what_follows(lora_bytes=path.stat().st_size)
        if self.cfg.export_diffusers_format and kind == "final":
            save_lora(self.run.output_dir / f"{self.cfg.output_name}.diffusers.safetensors",
                      self.lora_tensors(models, "diffusers"), {"format": "pt"})
        self.say(f"Saved {path}", event="checkpoint", step=self.global_step, epoch=epoch, path=str(path), kind=kind)
        self._validate(epoch, path)
        return path

    def _save_state(self, models, losses) -> None:
        if not self.main:
            return
        lora = {f"{k}.{n}": t for k, m in models.items() for n, t in net.peft_state_dict(m).items()}
        opt = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        epoch, batch = self.position
        info = {"global_step": self.global_step, "epoch": epoch, "batch": batch, "total_steps": self.total_steps,
                "losses": losses[-2000:], "started_at": self.started_at, "validation": self._validation_state()}
        opt_sd = opt.state_dict()
        save_state(self.run.state, lora, opt_sd, self.scheduler.state_dict(), info)
        self.run.event("checkpoint", step=self.global_step, epoch=epoch, path=str(self.run.state), kind="state")
        self._room_for_what_follows(state_size=state_bytes(lora, opt_sd))

    def _saves_to_come(self) -> int:
        """How many LoRA files the rest of the run writes (the final one, per-epoch and per-step ones)."""
        cfg = self.cfg
        steps_left = max((self.total_steps or 0) - self.global_step, 0)
        n = 2 if cfg.export_diffusers_format else 1
        if cfg.save_every_n_steps:
            n += steps_left // cfg.save_every_n_steps
        if cfg.save_every_n_epochs and self.steps_per_epoch:
            n += steps_left // self.steps_per_epoch // cfg.save_every_n_epochs
        return n

    def _room_for_what_follows(self, lora_bytes: int = 0, state_size: int = 0) -> None:
        """Once per run, a warning event when the drive will not hold the saves still to come: the LoRA files and a
        second state beside the current one while it is replaced."""
        self.save_sizes = (lora_bytes or self.save_sizes[0], state_size or self.save_sizes[1])
        if self.space_warned or not self.main:
            return
        need = self._saves_to_come() * self.save_sizes[0] + self.save_sizes[1]
        if free_bytes(self.run.output_dir) < need:
            self.space_warned = True
            self.warn(f"{free_space_text(self.run.output_dir)} in {self.run.output_dir}: the {self._saves_to_come()} "
                      f"LoRA file(s) still to be saved and the training state need about {size_text(need)}. Free "
                      "some space before then, or the run stops with 'Disk full' (its last state stays resumable).")

    def _restore(self, models) -> tuple[int, int, list[float]]:
        lora, opt_sd, sched_sd, info = load_state(self.run.state)
        for key, model in models.items():
            sub = {k[len(key) + 1:]: v for k, v in lora.items() if k.startswith(key + ".")}
            if not sub:
                raise TrainingFailed(f"The saved state in {self.run.state} does not match this config ({key} missing). "
                                     "Resume with the same settings the run was started with.", 2)
            net.load_peft_state_dict(model, sub)
        opt = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        opt.load_state_dict(opt_sd)
        self.scheduler.load_state_dict(sched_sd)
        self.global_step = int(info["global_step"])
        self.position = (int(info["epoch"]), int(info["batch"]))
        self.started_at = info.get("started_at", self.started_at)
        self._restore_validation(info)
        if self.main:
            self.run.set_status(step=self.global_step)
        return int(info["epoch"]), int(info["batch"]), list(info.get("losses", []))

    def _finish(self, code: int, status: str, message: str, tb: str) -> None:
        """The run's outcome into train.log, events.jsonl and status.json. Each write is tried on its own: on a
        full disk the status (a few hundred bytes, overwritten in place if need be) still says why."""
        def attempt(write, *args, **kw) -> None:
            try:
                write(*args, **kw)
            except OSError as e:
                self.echo(f"(could not record the outcome: {e})")

        if tb and self.main and self.owns_run:
            attempt(self.run.log, tb)
        if status == "failed":
            attempt(self.say, f"ERROR: {message}", event="error", message=message)
        else:
            attempt(self.say, message)
        if self.main and self.owns_run:
            end = {"status": status, "exit_code": code, "message": message, **self._best_fields()}
            if status == "completed":
                end["lora_path"] = str(self.run.lora_path())
            attempt(self.run.event, "end", **end)
            attempt(self.run.set_status, status=status, exit_code=code, step=self.global_step, message=message,
                    **self._best_fields())
