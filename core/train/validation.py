"""The validation loss, the best epoch and early stopping (part of the Trainer).

Held-out images (validation_split, chosen by core/data/holdout.py and listed in the run folder's validation.json)
or a validation_data_dir are never in an epoch's batches. Their loss is **stable**: each image is noised at the
same LEVELS noise levels spread over the schedule (the family's Objective.fixed_batch: DDPM timesteps for SD,
sigmas for flow matching) with the same noise every time (drawn from validation_seed), with the models in eval
mode (no LoRA dropout), the caption as in training without shuffle or dropout, and the sum kept in float64. Two
evaluations of the same weights give the same number, comparable across epochs and across a resume.

It is measured before the first step (the base model's loss: the reference the LoRA should beat), every
validate_every_n_epochs epochs and for every saved LoRA file (whose metadata records it as ss_validation_loss).
Each evaluation is a `validation` event; the saved file with the lowest loss is the run's `best` (end event and
status.json). The history travels in the training state, so a resumed run continues it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..data.dataset import DatasetError, load_image, load_items, sdxl_meta
from ..data.holdout import choose_held_out, read_record, record
from ..data.latents import encode
from ..models.base import TextCond

LEVELS = 8  # noise levels per image: (i + 0.5) / LEVELS of the schedule


def best_of(history: list[dict]) -> dict | None:
    """The saved file with the lowest validation loss (the earliest of equal ones), or None."""
    saved = [h for h in history if h.get("path")]
    return min(saved, key=lambda h: (h["loss"], h["step"])) if saved else None


def rising_since(history: list[dict]) -> dict | None:
    """The evaluation after which the loss rose twice in a row (the last two evaluations), or None."""
    points = _distinct(history)
    if len(points) < 3:
        return None
    a, b, c = points[-3:]
    return a if a["loss"] < b["loss"] < c["loss"] else None


def evaluations_since_best(history: list[dict]) -> int:
    """How many evaluations came after the lowest loss so far."""
    points = _distinct(history)
    if not points:
        return 0
    low = min(range(len(points)), key=lambda i: (points[i]["loss"], i))
    return len(points) - 1 - low


def _distinct(history: list[dict]) -> list[dict]:
    """One point per step (a step can be evaluated once and recorded twice: at an epoch's end and for its file)."""
    by_step: dict[int, dict] = {}
    for h in history:
        by_step.setdefault(h["step"], h)
    return [by_step[s] for s in sorted(by_step)]


class ValidationMixin:
    def _reset_validation(self) -> None:
        """The validation state of a run that has measured nothing yet (the trainer's __init__ calls it)."""
        self.val_history: list[dict] = []  # the losses measured so far (restored on resume)
        self.val_warned = False
        self.early_stopped = False
        self._val_cached: tuple[int, float, float] | None = None  # (step, loss, seconds it took)
        self._val_timed = False

    # ------------------------------------------------------------------ data
    def _split_validation(self, items: list, chooser) -> tuple[list, list]:
        """(training items, validation items) for this run, recorded in validation.json."""
        cfg = self.cfg
        if not cfg.validates:
            return items, []
        seed = cfg.effective_validation_seed
        if cfg.validation_data_dir.strip():
            val = load_items(Path(cfg.validation_data_dir), is_reg=False, trigger=cfg.trigger_word,
                             caption_ext=cfg.caption_extension, chooser=chooser)
            if not val:
                raise DatasetError(f"validation_data_dir {cfg.validation_data_dir} holds no images: put some into "
                                   "its '<repeats>_<name>' folders, or clear validation_data_dir")
            names = [str(it.path) for it in val]
            source = "validation_data_dir"
        else:
            root = Path(cfg.train_data_dir)
            by_name = {it.path.relative_to(root).as_posix(): it for it in items}
            previous = read_record(self.run.path) if self.resume else None
            if previous is not None and previous.get("source") == "validation_split":
                names = [n for n in previous["images"] if n in by_name]
                gone = [n for n in previous["images"] if n not in by_name]
                if gone:
                    self.warn(f"{len(gone)} held-out validation image(s) are no longer in {root} "
                              f"(e.g. {gone[0]}): the validation loss is measured on the {len(names)} left.")
            else:
                try:
                    names = choose_held_out(list(by_name), cfg.validation_split, seed)
                except ValueError as e:
                    raise DatasetError(str(e)) from None
            val = [by_name[n] for n in names]
            items = [it for it in items if it.path.relative_to(root).as_posix() not in set(names)]
            source = "validation_split"
        if not val:
            raise DatasetError("No validation images are left: set validation_split to 0 or add images.")
        if self.main:
            record(self.run.path, source=source, images=names, seed=seed, split=cfg.validation_split)
        return items, val

    def _validation_plan(self) -> str:
        n = len(self.ts.val_indices)
        if not n:
            return ""
        every = self.cfg.validate_every_n_epochs
        return (f"; validation: {n} image(s) x {LEVELS} noise levels "
                + ("every epoch" if every == 1 else f"every {every} epochs") + " and for each saved file")

    # --------------------------------------------------------------- measure
    def _validation_loss(self) -> float:
        """The mean loss of the validation images at the fixed noise levels (one evaluation)."""
        if self._val_cached is not None and self._val_cached[0] == self.global_step:
            return self._val_cached[1]
        t0 = time.time()
        comps, cfg, dev, ts = self.comps, self.cfg, self.acc.device, self.ts
        fam = comps.family
        modes = [(m, m.training) for m in [comps.denoiser, *comps.text_encoders] if m is not None]
        for m, _ in modes:
            m.eval()  # no LoRA, rank or module dropout
        total, count = 0.0, 0
        levels = (torch.arange(LEVELS, dtype=torch.float64) + 0.5) / LEVELS
        try:
            with torch.no_grad():
                for j, idx in enumerate(ts.val_indices):
                    item = ts.items[idx]
                    gen = torch.Generator().manual_seed(cfg.effective_validation_seed * 1_000_003 + j)
                    latents = self._validation_latents(idx, gen).to(dev, torch.float32)
                    noise = torch.randn((LEVELS, *latents.shape), generator=gen).to(dev)
                    cond = self._validation_text(item.caption)
                    for lo in range(0, LEVELS, cfg.train_batch_size):
                        k = min(cfg.train_batch_size, LEVELS - lo)
                        batch = self.objective.fixed_batch(latents.expand(k, *latents.shape).contiguous(),
                                                           levels[lo:lo + k].float(), noise[lo:lo + k])
                        with self.acc.autocast():
                            raw = fam.predict(comps.denoiser, comps, batch, TextCond.stack([cond] * k).to(dev),
                                              [sdxl_meta(item)] * k, self.weight_dtype)
                        pred = self.objective.prediction(raw, batch)
                        loss = torch.nn.functional.mse_loss(pred.float(), batch.target.float(), reduction="none")
                        total += loss.mean(dim=(1, 2, 3)).double().sum().item()
                        count += k
        finally:
            for m, training in modes:
                m.train(training)
        value = total / max(count, 1)
        self._val_cached = (self.global_step, value, time.time() - t0)
        return value

    def _validation_latents(self, idx: int, gen: torch.Generator) -> torch.Tensor:
        if self.latent_cache is not None:
            return self.latent_cache.get(idx, False)
        return encode(self.comps.vae, load_image(self.ts.items[idx])[None], gen,
                      self.comps.family.scale_latents)[0]

    def _validation_text(self, caption: str) -> TextCond:
        if self.text_cache is not None:
            return self.text_cache[caption]
        with self.acc.autocast():
            return self.comps.family.encode_text(self.comps, [caption], self.cfg.clip_skip).index(0)

    # ---------------------------------------------------------------- record
    def _validate(self, epoch: int, path: Path | None = None) -> float | None:
        """Measure (or reuse this step's measure), record a validation event, warn about overfitting and decide
        on early stopping. Returns the loss (None when the run does not validate)."""
        if not self.main or self.ts is None or not self.ts.val_indices:
            return None
        loss = self._validation_loss()
        seconds = self._val_cached[2]
        point = {"step": self.global_step, "epoch": epoch, "loss": loss, "path": str(path) if path else None}
        self.val_history.append(point)
        self.run.event("validation", **point, seconds=round(seconds, 2))
        self.run.log(f"validation loss {loss:.6f} at step {self.global_step} (epoch {epoch})"
                     + (f" for {Path(path).name}" if path else ""))
        if not self._val_timed:
            self._val_timed = True
            more = self._evaluations_to_come()
            self.say(f"Validation: {len(self.ts.val_indices)} image(s) x {LEVELS} noise levels took {seconds:.1f} s"
                     + (f"; about {more} more in this run (about {more * seconds:.0f} s)" if more else ""))
        since = rising_since(self.val_history)
        if since is not None and not self.val_warned:
            self.val_warned = True
            best = best_of(self.val_history)
            self.warn(f"The validation loss rose at the last two evaluations (from {since['loss']:.5f} at epoch "
                      f"{since['epoch']}): the run is probably overfitting since epoch {since['epoch']}."
                      + (f" The best file so far is {Path(best['path']).name}." if best else ""))
        patience = self.cfg.early_stop_patience
        if patience and evaluations_since_best(self.val_history) >= patience and not self.early_stopped:
            self.early_stopped = True
            self.say(f"Early stop: the validation loss has not improved for {patience} evaluation(s).")
        return loss

    def _evaluations_to_come(self) -> int:
        epochs_left = max(0, self.epochs - (self.position[0] if self.global_step else 0))
        return epochs_left // self.cfg.validate_every_n_epochs

    def _should_stop_early(self) -> bool:
        """The early-stop decision, the same in every process."""
        flag = torch.tensor([int(self.early_stopped)], device=self.acc.device)
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast

            flag = broadcast(flag)
        self.early_stopped = bool(flag.item())
        return self.early_stopped

    def _validation_state(self) -> dict:
        return {"history": self.val_history, "warned": self.val_warned}

    def _restore_validation(self, info: dict) -> None:
        saved = info.get("validation") or {}
        self.val_history = [h for h in saved.get("history", []) if h.get("step", 0) <= self.global_step]
        self.val_warned = bool(saved.get("warned"))

    def _completion_message(self, final: Path, epoch: int) -> str:
        text = f"Training complete: {final}"
        if self.early_stopped:
            text = (f"Training complete, stopped early at epoch {epoch} of {self.epochs} (the validation loss had "
                    f"not improved for {self.cfg.early_stop_patience} evaluations): {final}")
        best = self._best_fields().get("best")
        if best:
            text += (f". Best file: {best['path']} (epoch {best['epoch']}, step {best['step']}, validation loss "
                     f"{best['loss']:.5f})")
        return text

    def _best_fields(self) -> dict:
        best = best_of(self.val_history)
        if best is None:
            return {}
        return {"best": {k: best[k] for k in ("epoch", "step", "loss", "path")}}
