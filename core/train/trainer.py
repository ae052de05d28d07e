"""The training loop, the same for every model family (core/families: SD1.5, SDXL, Flux.1, FLUX.2 klein):
headless, with events, samples, the validation loss, resume, and a plain message for every way it can end."""
from __future__ import annotations

import math
import random
import signal
import time
import traceback
from pathlib import Path

import torch

from ..config.toml_io import ConfigError
from ..data.buckets import BucketChooser
from ..data.dataset import DatasetError, TrainingSet, load_image, load_items, process_caption, sdxl_meta
from ..data.latents import encode
from ..data.masks import attach_masks
from ..lora import network as net
from ..models.base import TextCond
from ..models.loading import ModelLoadError, load_components
from ..config.schema import TrainConfig
from .optim import OptimizerError, make_optimizer, make_scheduler
from .regularize import apply_max_norm, norm_fields
from .caching import CacheMixin
from ..failures import DiskFull, disk_full_message, is_disk_full
from .checkpoints import CheckpointMixin, TrainingFailed
from .validation import ValidationMixin
from .memory_advice import out_of_memory_message
from .state import RESUME_AFTER_FREEING
from .memory import move as _move, place_text_encoders, setup_denoiser
from .rundir import RunDir
from .process import allocator_note, keep_freed_memory_for_reuse, quiet_libraries

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3
USER_ERRORS = (ConfigError, DatasetError, ModelLoadError, OptimizerError, ValueError, FileNotFoundError)


class Trainer(CacheMixin, CheckpointMixin, ValidationMixin):
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, echo=print):
        self.cfg = cfg
        self.resume = resume
        self.overwrite = overwrite
        self.echo = echo
        self.run = RunDir(cfg.output_dir, cfg.output_name)
        self.stop_requested = False
        self.owns_run = False  # set once this process has taken the run folder; never write into someone else's
        self.global_step = 0
        self.started_at = time.time()
        self.position = (0, 0)  # (epoch, batch) reached: saved with the state, restored on resume
        self.phase = "starting"  # what an out-of-memory or disk-full message says the run was doing
        self.save_sizes = (0, 0)  # bytes of the last LoRA file and training state written
        self.space_warned = False
        self.ts = None  # the training set, once the dataset is read
        self._reset_validation()

    # ------------------------------------------------------------------ entry
    def train(self) -> int:
        """Run to the end; return the process exit code. Never raises."""
        from accelerate import Accelerator

        quiet_libraries()
        cpu = not torch.cuda.is_available()
        if cpu:
            keep_freed_memory_for_reuse()
        mp = "no" if cpu else self.cfg.mixed_precision
        self.acc = Accelerator(mixed_precision=mp, cpu=cpu)
        self.main = self.acc.is_main_process
        try:
            self._prepare_run_dir()
            note = allocator_note()
            if note:
                self.say(note)
            if cpu and self.cfg.mixed_precision != "no":
                self.warn(f"No GPU found: training in fp32 on the CPU (mixed_precision={self.cfg.mixed_precision} ignored). "
                          "This is slow; it is meant for small tests.")
            self._install_signal_handlers()
            code, status, message = self._train()
        except DiskFull as e:
            code, status, message = EXIT_FAILED, "failed", str(e)
            tb = traceback.format_exc()
        except TrainingFailed as e:
            code, status, message = e.exit_code, "failed", str(e)
            tb = traceback.format_exc()
        except USER_ERRORS as e:
            code, status, message = EXIT_BAD_INPUT, "failed", str(e)
            tb = traceback.format_exc()
        except (torch.cuda.OutOfMemoryError, MemoryError) as e:
            code, status, message = EXIT_FAILED, "failed", out_of_memory_message(e, self.phase, self.cfg)
            tb = traceback.format_exc()
        except Exception as e:  # a bug or an environment problem
            message = (disk_full_message(self.run.path, then=RESUME_AFTER_FREEING) if is_disk_full(e)
                       else f"{type(e).__name__}: {e}")
            code, status = EXIT_FAILED, "failed"
            tb = traceback.format_exc()
        self._finish(code, status, message, tb if code != EXIT_OK and status == "failed" else "")
        self._end_processes(code)
        return code

    def _end_processes(self, code: int) -> None:
        """Several processes (accelerate launch): take the process group down before exiting. Left to the exit,
        its communication threads can abort the process ("terminate called without an active exception")."""
        if self.acc.num_processes <= 1:
            return
        try:
            if code == EXIT_OK:
                self.acc.wait_for_everyone()
            self.acc.end_training()
        except Exception as e:  # the run's outcome is written already; this only tidies up
            self.echo(f"Could not close the process group cleanly: {e}")

    # ---------------------------------------------------------------- helpers
    def say(self, text: str, /, event: str | None = None, **fields) -> None:
        if not self.main:
            return
        self.echo(text)
        if self.owns_run:
            self.run.log(text)
            if event:
                self.run.event(event, **fields)

    def warn(self, message: str) -> None:
        self.say(f"WARNING: {message}", event="warning", message=message)

    def _prepare_run_dir(self) -> None:
        replace_note = self.run.check_free(resume=self.resume, overwrite=self.overwrite)
        if not self.main:
            return
        self.run.take(self.cfg, resume=self.resume, clear=self.overwrite or bool(replace_note))
        self.owns_run = True
        if replace_note:
            self.say(replace_note)

    def _install_signal_handlers(self) -> None:
        def handler(signum, frame):
            self.stop_requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not in the main thread (tests)
                pass

    # ------------------------------------------------------------------- data
    def _load_data(self) -> TrainingSet:
        cfg = self.cfg
        if not cfg.train_data_dir:
            raise ConfigError(["train_data_dir is empty: set it to the folder that holds your '<repeats>_<name>' folders."])
        chooser = BucketChooser(cfg.resolution_wh, enable=cfg.enable_bucket, min_reso=cfg.min_bucket_reso,
                                max_reso=cfg.max_bucket_reso, step=cfg.bucket_reso_steps, no_upscale=cfg.bucket_no_upscale)
        items = load_items(Path(cfg.train_data_dir), is_reg=False, trigger=cfg.trigger_word,
                           caption_ext=cfg.caption_extension, chooser=chooser)
        items, val = self._split_validation(items, chooser)  # held-out images never reach the optimizer
        reg = load_items(Path(cfg.reg_data_dir), is_reg=True, trigger="", caption_ext=cfg.caption_extension,
                         chooser=chooser) if cfg.reg_data_dir else []
        for it in items + reg + val:
            for w in it.warnings:
                self.warn(w)
        if cfg.mask_source:
            for w in attach_masks(items, cfg.mask_source, cfg.conditioning_data_dir):
                self.warn(w)
            self.say(f"Masked loss: {len(items)} training image(s) masked by "
                     + ("their alpha channel" if cfg.mask_source == "alpha" else f"the masks in {cfg.conditioning_data_dir}"))
        elif cfg.conditioning_data_dir.strip():
            self.warn("conditioning_data_dir is set but masked_loss is off: the masks are not used.")
        return TrainingSet(items, reg, cfg.train_batch_size, cfg.seed, cfg.flip_aug, val_items=val)

    def _plan(self, ts: TrainingSet) -> None:
        cfg = self.cfg
        world = self.acc.num_processes
        batches = len(ts.epoch_batches(0))
        self.batches_per_process = math.ceil(batches / world)
        self.steps_per_epoch = math.ceil(self.batches_per_process / cfg.gradient_accumulation_steps)
        if cfg.max_train_steps > 0:
            self.total_steps = cfg.max_train_steps
            self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        elif cfg.max_train_epochs > 0:
            self.epochs = cfg.max_train_epochs
            self.total_steps = self.epochs * self.steps_per_epoch
        else:
            raise ConfigError(["max_train_epochs and max_train_steps are both 0: set one of them."])
        n_img = ts.n_train
        uses = sum(it.repeats for it in ts.items[: ts.n_train])
        text = (f"{n_img} images, {uses} uses per epoch with repeats"
                + (f" (+{len(ts.uses) - uses} regularization)" if len(ts.uses) > uses else "")
                + f", batch {cfg.train_batch_size}"
                + (f" x {cfg.gradient_accumulation_steps} accumulation" if cfg.gradient_accumulation_steps > 1 else "")
                + (f" on {world} processes" if world > 1 else "")
                + f" = {self.steps_per_epoch} steps per epoch; {self.epochs} epochs = {self.total_steps} steps"
                + self._validation_plan())
        buckets = ts.bucket_counts()
        self.say("Plan: " + text)
        self.say("Buckets: " + ", ".join(f"{b['width']}x{b['height']}: {b['count']}" for b in buckets),
                 event="plan", images=n_img, reg_images=ts.n_reg, validation_images=len(ts.val_indices),
                 epochs=self.epochs,
                 batch_size=cfg.train_batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                 steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps, buckets=buckets, text=text)
        if self.main:
            self.run.set_status(total_steps=self.total_steps)

    # ------------------------------------------------------------------ model
    def _load_model(self):
        cfg = self.cfg
        self.say(f"Loading base model {cfg.pretrained_model_name_or_path}", event="progress", stage="load_model", done=0, total=1)
        comps = load_components(cfg.pretrained_model_name_or_path, family=cfg.model_family, vae=cfg.vae,
                                base_config_dir=cfg.base_config_dir, v_parameterization=cfg.v_parameterization,
                                progress=lambda m: self.say(m), settings=cfg.model_dump(),
                                large_model_dtype=self.weight_dtype)
        self.say(f"Loaded a {comps.family.title} model", event="progress", stage="load_model", done=1, total=1)
        for w in comps.family.prepare(comps, cfg) + [cfg.unused_by(comps.family.name)]:
            if w:
                self.warn(w)
        return comps

    def _check_caption_lengths(self, comps, ts: TrainingSet) -> None:
        tok, limit, usable = comps.family.caption_limit(comps)
        long = [it.path.name for it in ts.items if len(tok(it.caption).input_ids) > limit]
        if long:
            self.warn(f"{len(long)} caption(s) are longer than {usable} tokens; the rest is cut off "
                      f"(e.g. {', '.join(long[:3])}). Put the important words first.")

    def _setup_network(self, comps) -> tuple[list, list]:
        cfg = self.cfg
        spec = net.NetworkSpec.from_config(cfg)
        self.spec = spec
        dev, wd = self.acc.device, self.weight_dtype
        fam = comps.family
        comps.denoiser.requires_grad_(False)
        for te in comps.text_encoders:
            te.requires_grad_(False)
        note = place_text_encoders(comps.text_encoders, dev, wd)  # t5xxl_precision fp8: T5's Linears stay fp8
        if note:
            self.say(note)
        _move(comps.vae, dev, torch.float32 if fam.vae_needs_fp32 else wd)
        comps.vae.requires_grad_(False).eval()
        if not cfg.sdpa:
            fam.set_plain_attention(comps.denoiser)
        self.conv_modules: dict[str, list[str]] = {}
        self.trained_te = fam.trainable_text_encoders(comps) if cfg.train_text_encoder else []
        te_params = []

        def inject_unet() -> list:
            torch.manual_seed(cfg.seed)  # LoRA initialisation: the same seed gives the same LoRA
            if not cfg.train_unet:
                return []
            main, conv = fam.denoiser_targets(comps.denoiser, spec)
            self.conv_modules["unet"] = conv
            return net.inject(comps.denoiser, spec, (main, conv))
        self.memory, unet_params = setup_denoiser(cfg, comps.denoiser, dev, wd, inject_unet, self.say)  # base_precision ...
        for i in self.trained_te:
            te_params += net.inject(comps.text_encoders[i], spec, (net.text_encoder_targets(comps.text_encoders[i]), []))
            self.conv_modules[f"te{i}"] = []
        if cfg.gradient_checkpointing or self.memory.needs_checkpointing:
            comps.denoiser.enable_gradient_checkpointing()
            for i in self.trained_te:
                comps.text_encoders[i].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        comps.denoiser.train(cfg.train_unet)
        for i, te in enumerate(comps.text_encoders):
            te.train(i in self.trained_te)
        n = sum(p.numel() for p in unet_params + te_params)
        parts = ([fam.denoiser_name] if unet_params else []) + (["text encoder"] if te_params else [])
        title = {"loha": "LoHa", "lokr": "LoKr", "locon": "LoCon"}.get(spec.kind, "LoRA")
        self.say(f"{title}: rank {spec.dim}, alpha {spec.alpha:g}, {n / 1e6:.2f}M trainable parameters ({' + '.join(parts)})")
        return unet_params, te_params

    def trained_models(self, comps) -> dict[str, torch.nn.Module]:
        models = {}
        if self.cfg.train_unet:
            models["unet"] = comps.denoiser
        for i in self.trained_te:
            models[f"te{i}"] = comps.text_encoders[i]
        return models

    # ------------------------------------------------------------------- main
    def _train(self) -> tuple[int, str, str]:
        cfg = self.cfg
        ts = self._load_data()
        self.ts = ts
        self._plan(ts)
        dev = self.acc.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.acc.mixed_precision, torch.float32)
        self.phase = "loading the model"
        comps = self._load_model()
        self.comps = comps
        self._check_caption_lengths(comps, ts)
        unet_params, te_params = self._setup_network(comps)
        self.phase = "caching latents and text-encoder outputs"
        self._cache(comps, ts)
        self.phase = "moving the model to the GPU"
        self.memory.to_device(comps.denoiser)  # the denoiser waited in RAM while caching

        groups = []
        if unet_params:
            groups.append({"params": unet_params, "lr": cfg.effective_unet_lr})
        if te_params:
            groups.append({"params": te_params, "lr": cfg.effective_text_encoder_lr})
        optimizer = make_optimizer(cfg.optimizer_type, groups, cfg.optimizer_args, dev)
        scheduler = make_scheduler(optimizer, cfg.lr_scheduler, cfg.lr_warmup_steps, self.total_steps,
                                   cfg.lr_scheduler_num_cycles, cfg.lr_scheduler_power)
        self.objective = comps.family.make_objective(comps, cfg, dev)

        models = self.trained_models(comps)
        wrapped = {k: self.acc.prepare(m) if self.acc.num_processes > 1 else m for k, m in models.items()}
        self.unet_fwd = wrapped.get("unet", comps.denoiser)
        self.te_fwd = [wrapped.get(f"te{i}", te) for i, te in enumerate(comps.text_encoders)]
        optimizer = self.acc.prepare(optimizer)
        self.optimizer, self.scheduler = optimizer, scheduler
        params = unet_params + te_params

        start_epoch, start_batch, losses = 0, 0, []
        if self.resume:
            start_epoch, start_batch, losses = self._restore(models)
            self.say(f"Resumed at step {self.global_step} (epoch {start_epoch + 1})", event="start", pid=__import__("os").getpid(),
                     resumed=True, step=self.global_step)
        else:
            self._validate(0)  # the base model's loss: what the LoRA should beat
            if cfg.sample_at_first and cfg.sample_prompts:
                self._sample(0)

        ga = cfg.gradient_accumulation_steps
        world, rank = self.acc.num_processes, self.acc.process_index
        step_times: list[float] = []
        t_last = time.time()
        self.say(f"Training {self.total_steps} steps on {dev.type.upper()}")
        self.phase = "training"
        for epoch in range(start_epoch, self.epochs):
            batches = ts.epoch_batches(epoch)
            mine = [batches[(i * world + rank) % len(batches)] for i in range(self.batches_per_process)]
            first = start_batch if epoch == start_epoch else 0
            micro = 0
            for b_idx in range(first, len(mine)):
                loss = self._micro_step(comps, mine[b_idx], epoch, b_idx, micro, ga)
                losses.append(loss)
                micro += 1
                last_in_epoch = b_idx == len(mine) - 1
                if micro < ga and not last_in_epoch:
                    continue
                micro = 0
                if cfg.max_grad_norm > 0:
                    self.acc.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                norms = norm_fields(apply_max_norm(models, cfg.scale_weight_norms) if cfg.scale_weight_norms else None)
                self.global_step += 1
                self.position = (epoch, b_idx + 1) if not last_in_epoch else (epoch + 1, 0)
                now = time.time()
                step_times.append(now - t_last)
                t_last = now
                recent = step_times[-20:]
                it_s = len(recent) / max(sum(recent), 1e-9)
                window = losses[-max(len(mine), 1):]
                avg = sum(window) / len(window)
                self._report_step(epoch, loss, avg, scheduler.get_last_lr()[0], it_s, norms)
                done = self.global_step >= self.total_steps
                t_pause = time.time()
                stop = self._handle_requests(models, losses, epoch, done)
                if stop:
                    return EXIT_STOPPED, "stopped", f"Stopped at step {self.global_step}; resume with --resume."
                if not done and cfg.sample_every_n_steps and self.global_step % cfg.sample_every_n_steps == 0:
                    self._sample(epoch + 1)
                if not done and cfg.save_every_n_steps and self.global_step % cfg.save_every_n_steps == 0:
                    self._save_lora(models, f"-step{self.global_step:08d}", "step", epoch + 1)
                    if self._should_stop_early():
                        break
                if not done and self.global_step % cfg.save_state_every_n_steps == 0:
                    self._save_state(models, losses)
                t_last += time.time() - t_pause  # sampling and saving do not count towards it/s
                if done:
                    break
            if self.global_step >= self.total_steps or self.early_stopped:
                break
            ep = epoch + 1
            t_pause = time.time()
            saved = cfg.save_every_n_epochs and ep % cfg.save_every_n_epochs == 0
            if saved:
                self._save_lora(models, f"-{ep:06d}", "epoch", ep)
            elif cfg.validates and ep % cfg.validate_every_n_epochs == 0:
                self._validate(ep)
            if cfg.sample_every_n_epochs and ep % cfg.sample_every_n_epochs == 0:
                self._sample(ep)
            t_last += time.time() - t_pause
            if self._should_stop_early():
                break
        last_epoch = self.epochs if not self.early_stopped else max(1, self.position[0] + (self.position[1] > 0))
        final = self._save_lora(models, "", "final", last_epoch)
        if cfg.sample_prompts and (cfg.sample_every_n_epochs or cfg.sample_every_n_steps):
            self._sample(last_epoch)
        self._save_state(models, losses)
        return EXIT_OK, "completed", self._completion_message(final, last_epoch)

    def _micro_step(self, comps, batch, epoch: int, b_idx: int, micro: int, ga: int) -> float:
        cfg, dev, ts = self.cfg, self.acc.device, self.ts
        fam = comps.family
        seed = (cfg.seed * 1_000_003 + epoch * 10_007 + b_idx) % (2**63)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # LoRA dropout (peft, rank_dropout, module_dropout) draws from the global generator
        items = [ts.items[s.item_index] for s in batch]
        if self.latent_cache is not None:
            latents = torch.stack([self.latent_cache.get(s.item_index, s.flip) for s in batch])
        else:
            pixels = torch.stack([load_image(ts.items[s.item_index], s.flip) for s in batch])
            latents = encode(comps.vae, pixels, gen, comps.family.scale_latents)
        latents = latents.to(dev, torch.float32)
        rng = random.Random(seed)
        captions = [process_caption(it.caption, rng, shuffle=cfg.shuffle_caption, keep_tokens=cfg.keep_tokens,
                                    dropout=cfg.caption_dropout_rate) for it in items]
        if self.text_cache is not None:
            cond = TextCond.stack([self.text_cache[c] for c in captions]).to(dev)
        else:
            with torch.set_grad_enabled(cfg.train_text_encoder), self.acc.autocast():
                cond = fam.encode_text(comps, captions, cfg.clip_skip) if not cfg.train_text_encoder else \
                    self._encode_trained(comps, captions)
        batch_in = self.objective.noisy_batch(latents, gen)
        with self.acc.autocast():
            raw = fam.predict(self.unet_fwd, comps, batch_in, cond, [sdxl_meta(it) for it in items], self.weight_dtype)
        pred = self.objective.prediction(raw, batch_in)
        loss = torch.nn.functional.mse_loss(pred.float(), batch_in.target.float(), reduction="none")
        if self.masks is not None:  # sd-scripts' apply_masked_loss: masked elements count as 0 in the mean
            loss = loss * self.masks.batch(batch, latents.shape[-2:]).to(dev)
        loss = loss.mean(dim=(1, 2, 3))
        weights = torch.tensor([cfg.prior_loss_weight if it.is_reg else 1.0 for it in items], device=dev)
        if batch_in.weights is not None:
            weights = weights * batch_in.weights
        loss = (loss * weights).mean()
        if not torch.isfinite(loss):
            raise TrainingFailed(
                f"The loss became {loss.item()} at step {self.global_step + 1}: training diverged. Lower learning_rate, "
                "use bf16 instead of fp16, or check for a broken image. The last saved state and LoRA files are kept.")
        self.acc.backward(loss / ga)
        return loss.item()

    def _encode_trained(self, comps, captions):
        """Text encoding through the (possibly DDP-wrapped) trained encoders."""
        if self.acc.num_processes == 1:
            return comps.family.encode_text(comps, captions, self.cfg.clip_skip)
        saved = comps.text_encoders
        comps.text_encoders = self.te_fwd
        try:
            return comps.family.encode_text(comps, captions, self.cfg.clip_skip)
        finally:
            comps.text_encoders = saved

    # --------------------------------------------------------------- reporting
    def _report_step(self, epoch: int, loss: float, avg: float, lr: float, it_s: float, norms: dict) -> None:
        if not self.main:
            return
        eta = (self.total_steps - self.global_step) / it_s if it_s > 0 else None
        self.run.event("step", step=self.global_step, total_steps=self.total_steps, epoch=epoch + 1, loss=round(loss, 6),
                       avg_loss=round(avg, 6), lr=lr, it_per_s=round(it_s, 4), eta_s=None if eta is None else round(eta, 1),
                       **norms)
        self.run.set_status(step=self.global_step)
        every = max(1, self.total_steps // 100)
        if self.global_step % every == 0 or self.global_step == self.total_steps:
            eta_txt = "?" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
            msg = (f"step {self.global_step}/{self.total_steps} epoch {epoch + 1}/{self.epochs} loss {loss:.4f} "
                   f"(avg {avg:.4f}) lr {lr:.2e} {it_s:.2f} it/s ETA {eta_txt}" + (
                       f" | keys scaled {norms['keys_scaled']}, average key norm {norms['average_key_norm']:.4f}, "
                       f"max {norms['max_key_norm']:.4f}" if norms else ""))
            self.echo(msg)
            self.run.log(msg)

    def _handle_requests(self, models, losses, epoch: int, done: bool) -> bool:
        flags = torch.tensor([0, 0, 0], device=self.acc.device)
        if self.main:
            flags[0] = int(self.stop_requested or self.run.take_request("stop"))
            flags[1] = int(self.run.take_request("sample"))
            flags[2] = int(self.run.take_request("save"))
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast

            flags = broadcast(flags)
        stop, sample, save = (bool(x) for x in flags.tolist())
        if sample and self.cfg.sample_prompts:
            self._sample(epoch + 1)
        elif sample:
            self.warn("Sample requested, but there are no sample_prompts.")
        if save and not done:
            self._save_lora(models, f"-step{self.global_step:08d}", "manual", epoch + 1)
            self._save_state(models, losses)
        if stop and not done:
            self.say(f"Stop requested: saving at step {self.global_step}")
            self._save_lora(models, f"-step{self.global_step:08d}", "step", epoch + 1)
            self._save_state(models, losses)
            return True
        return False

    def _sample(self, epoch: int) -> None:
        if not self.main or not self.cfg.sample_prompts:
            return
        from .sampling import make_samples

        t0 = time.time()
        phase, self.phase = self.phase, "making sample images"
        try:
            paths, prompts = make_samples(self.comps, self.cfg, self.run.samples, self.global_step, self.acc.device,
                                          self.weight_dtype)
        except OSError as e:
            if is_disk_full(e) and not isinstance(e, DiskFull):
                raise DiskFull(e.filename or self.run.samples, then=RESUME_AFTER_FREEING) from e
            raise
        self.phase = phase
        self.say(f"Made {len(paths)} sample image(s) in {time.time() - t0:.1f}s", event="sample",
                 step=self.global_step, epoch=epoch, paths=paths, prompts=prompts)
