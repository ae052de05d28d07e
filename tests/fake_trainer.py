"""A stand-in for `python -m core train` that writes the same run directory, fast and without torch.

Used by the GUI and runs tests through LW_TRAINER_CMD="<python> tests/fake_trainer.py". It reads the
config like the real CLI, honours --resume/--overwrite and control/{stop,sample,save}, saves a
resumable state/ and makes sample PNGs. Environment knobs:

  FAKE_STEP_SECONDS   seconds per step (default 0.1)
  FAKE_LOAD_SECONDS   seconds of "loading the model" before the first step (default 0.3)
  FAKE_CRASH_AT_STEP  raise an error at this step: error + end(failed, exit 1) events, exit code 1
                      (a training_comment "fake-crash-at-step N" does the same for one run)
  FAKE_FAIL_AT_LOAD   fail while "loading the model", before any step: error + end(failed, exit 2)
                      (a training_comment "fake-fail-at-load" does the same for one run)
  FAKE_TOTAL_STEPS    total steps when train_data_dir holds no images (default 20)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config.toml_io import ConfigError, atomic_write_text, load_config  # noqa: E402
from core.runs.replace import replaceable_run_note  # noqa: E402
from core.runs.steps_plan import steps_plan  # noqa: E402
from core.train.rundir import RunDir  # noqa: E402


class Run(RunDir):
    """The real run folder writer (core/train/rundir.py: events, status, log, control requests), so the fake and
    the trainer cannot write the protocol differently; the fake also prints what it logs, as the trainer does."""

    def __init__(self, out: Path, name: str):
        super().__init__(out, name)
        self.out = self.output_dir

    def log(self, message: str) -> None:
        print(message, flush=True)
        super().log(message)


def save_state(run: Run, step: int) -> None:
    state = run.path / "state"
    state.mkdir(exist_ok=True)
    (state / "lora.safetensors").write_bytes(b"fake state")
    atomic_write_text(state / "trainer.json", json.dumps({"global_step": step}))
    run.event("checkpoint", step=step, epoch=0, path=str(state), kind="state")


def save_lora(run: Run, suffix: str, kind: str, step: int, epoch: int) -> Path:
    path = run.out / f"{run.path.name}{suffix}.safetensors"
    path.write_bytes(b"fake lora")
    run.log(f"Saved {path}")
    run.event("checkpoint", step=step, epoch=epoch, path=str(path), kind=kind)
    return path


def make_samples(run: Run, cfg, step: int, epoch: int) -> None:
    from PIL import Image, ImageDraw

    paths = []
    for i, prompt in enumerate(cfg.sample_prompts):
        img = Image.new("RGB", (128, 128), ((step * 37) % 256, 90 + 40 * i, 160))
        ImageDraw.Draw(img).text((8, 56), f"step {step}", fill=(255, 255, 255))
        p = run.path / "samples" / f"s{step:06d}_{i:02d}.png"
        img.save(p)
        paths.append(str(p))
    run.log(f"Made {len(paths)} sample image(s)")
    run.event("sample", step=step, epoch=epoch, paths=paths, prompts=list(cfg.sample_prompts))


def validation(run: Run, step: int, epoch: int, total: int, path: Path | None) -> dict:
    """A validation event (a loss that falls, then rises after half the run); returns the end event's `best` for a
    saved file."""
    loss = round(0.2 - 0.1 * min(step, total / 2) / (total / 2) + 0.05 * max(0, step - total / 2) / total, 6)
    run.event("validation", step=step, epoch=epoch, loss=loss, path=str(path) if path else None, seconds=0.1)
    return {"best": {"epoch": epoch, "step": step, "loss": loss, "path": str(path)}} if path else {}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print("Config error:\n  " + "\n  ".join(e.lines), file=sys.stderr)
        return 2
    run = Run(Path(cfg.output_dir), cfg.output_name)
    state_file = run.path / "state" / "trainer.json"
    if args.resume and not state_file.is_file():
        print(f"Config error:\n  Nothing to resume: {run.path} has no saved state.", file=sys.stderr)
        return 2
    replace_note = None
    if not args.resume and (run.path / "events.jsonl").exists():
        replace_note = None if args.overwrite else replaceable_run_note(run.path)
        if not args.overwrite and replace_note is None:
            print(f"Config error:\n  The run folder {run.path} already holds a run.", file=sys.stderr)
            return 2
    # the trainer's own start: clear an earlier attempt, drop old requests, config, status "running", start event
    run.take(cfg, resume=args.resume, clear=args.overwrite or bool(replace_note))
    if replace_note:
        run.log(replace_note)

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(flag=True))
    step_s = float(os.environ.get("FAKE_STEP_SECONDS", "0.1"))
    crash_at = int(os.environ.get("FAKE_CRASH_AT_STEP", "0"))
    m = re.search(r"fake-crash-at-step (\d+)", cfg.training_comment)
    if m:
        crash_at = int(m.group(1))

    plan = steps_plan(cfg.train_data_dir, cfg)
    if plan.ok:
        total, per_epoch, epochs = plan.total_steps, plan.steps_per_epoch, plan.epochs
    else:
        total = cfg.max_train_steps or int(os.environ.get("FAKE_TOTAL_STEPS", "20"))
        epochs = max(1, cfg.max_train_epochs) if not cfg.max_train_steps else 1
        per_epoch = max(1, math.ceil(total / epochs))
    load_s = float(os.environ.get("FAKE_LOAD_SECONDS", "0.3"))
    if os.environ.get("FAKE_FAIL_AT_LOAD") or "fake-fail-at-load" in cfg.training_comment:
        msg = f"Cannot load the base model {cfg.pretrained_model_name_or_path!r}: not found (fake)."
        run.log(f"ERROR: {msg}")
        run.event("error", message=msg)
        run.event("end", status="failed", exit_code=2, message=msg)
        run.set_status(status="failed", exit_code=2, step=0, message=msg)
        return 2
    for i in range(1, 4):
        run.event("progress", stage="load_model", done=i, total=3)
        time.sleep(load_s / 3)
    text = f"fake plan: {per_epoch} steps per epoch; {epochs} epochs = {total} steps"
    run.log("Plan: " + text)
    run.event("plan", images=plan.images, reg_images=0, validation_images=plan.held_out, epochs=epochs,
              batch_size=cfg.train_batch_size,
              gradient_accumulation_steps=cfg.gradient_accumulation_steps, steps_per_epoch=per_epoch,
              total_steps=total, buckets=[], text=text)
    run.set_status(total_steps=total)

    step = 0
    if args.resume:
        step = int(json.loads(state_file.read_text())["global_step"])
        run.log(f"Resumed at step {step}")
        run.event("start", pid=os.getpid(), resumed=True, step=step)
        run.set_status(step=step)
    rng = random.Random(step)
    try:
        while step < total:
            time.sleep(step_s)
            step += 1
            if step == crash_at:
                raise RuntimeError(f"fake crash at step {step}")
            loss = 0.1 + 0.2 * math.exp(-step / 15) + rng.random() * 0.02
            epoch = (step - 1) // per_epoch + 1
            run.event("step", step=step, total_steps=total, epoch=epoch, loss=round(loss, 6), avg_loss=round(loss, 6),
                      lr=cfg.learning_rate, it_per_s=round(1 / max(step_s, 1e-3), 2),
                      eta_s=round((total - step) * step_s, 1))
            run.set_status(step=step)
            run.log(f"step {step}/{total} loss {loss:.4f}")
            if run.take_request("sample") and cfg.sample_prompts:
                make_samples(run, cfg, step, epoch)
            if run.take_request("save"):
                save_lora(run, f"-step{step:08d}", "manual", step, epoch)
                save_state(run, step)
            if (stop["flag"] or run.take_request("stop")) and step < total:
                run.log(f"Stop requested: saving at step {step}")
                save_lora(run, f"-step{step:08d}", "step", step, epoch)
                save_state(run, step)
                msg = f"Stopped at step {step}; resume with --resume."
                run.log(msg)
                run.event("end", status="stopped", exit_code=3, message=msg)
                run.set_status(status="stopped", exit_code=3, step=step, message=msg)
                return 3
            if step % cfg.save_state_every_n_steps == 0:
                save_state(run, step)
            if step % per_epoch == 0 and step < total and cfg.validates:
                validation(run, step, epoch, total, None)
            if step % per_epoch == 0 and step < total and cfg.sample_prompts and cfg.sample_every_n_epochs \
                    and epoch % cfg.sample_every_n_epochs == 0:
                make_samples(run, cfg, step, epoch)
        final = save_lora(run, "", "final", step, epochs)
        best = validation(run, step, epochs, total, final) if cfg.validates else None
        if cfg.sample_prompts:
            make_samples(run, cfg, step, epochs)
        save_state(run, step)
    except Exception as e:  # the same reporting as the real trainer
        msg = f"{type(e).__name__}: {e}"
        run.log(f"ERROR: {msg}")
        run.event("error", message=msg)
        run.event("end", status="failed", exit_code=1, message=msg)
        run.set_status(status="failed", exit_code=1, step=step, message=msg)
        return 1
    msg = f"Training complete: {final}"
    run.log(msg)
    run.event("end", status="completed", exit_code=0, message=msg, lora_path=str(final), **best or {})
    run.set_status(status="completed", exit_code=0, step=step, message=msg, **best or {})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
