"""`python -m core demo`: the whole flow, headless, offline, on the CPU, in a few minutes.

1. Writes the demo dataset: 16 drawn five-pointed stars captioned "a red zqx on a white background"
   (kohya layout ``10_zqx/``). The toy base model has never seen a star.
2. Trains a LoRA on the shipped toy base model (``models/toy-sd15``) with the "Demo (CPU)" preset,
   through the normal trainer (run folder, events, samples, kohya-format LoRA file).
3. Generates "a <color> zqx on a <background> background" at fixed seeds, without and with the LoRA
   (diffusers ``load_lora_weights``, as any user would), and measures with the shape checker how
   many images show a star: the concept score.
4. Prints, as its last line, a JSON object: ``concept_score_base``, ``concept_score_lora``,
   ``lora_path``, ``seconds`` and more.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .toy.starter import DEMO_PRESET as PRESET
from .toy.starter import TOY_MODEL as DEFAULT_MODEL

OUTPUT_NAME = "demo_zqx"
LEARNED = (0.6, 0.2)  # the concept counts as learned at >= 0.6 with the LoRA and < 0.2 without


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/demo", help="Folder for the dataset, the run and the images.")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="Base model (default: the shipped toy model).")
    p.add_argument("--steps", type=int, default=0, help="Training steps (default: the preset's epochs).")
    p.add_argument("--images", type=int, default=20, help="Images generated with and without the LoRA.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override one training key over the preset (repeatable).")
    p.add_argument("--quiet", action="store_true", help="Print only the final JSON line.")


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    # Before torch is imported: offline, and OpenMP threads that spin only briefly while they wait (the
    # default long spin makes 2 threads several times slower than 1 on a busy machine).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GOMP_SPINCOUNT", "20000")
    echo = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    try:
        result = _run(args, echo, t0)
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        print(json.dumps({"error": str(e), "seconds": round(time.time() - t0, 1)}))
        return e.code
    print(json.dumps(result))
    return 0


class DemoError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _config(args, data_dir: Path, out: Path):
    from .config.toml_io import ConfigError, apply_overrides, validate
    from .toy.starter import demo_values

    try:
        values = demo_values(args.model, data_dir, out, OUTPUT_NAME)
    except KeyError:
        raise DemoError(f"The '{PRESET}' preset is missing from presets/: reinstall.", 2) from None
    if args.steps:
        values["max_train_steps"] = args.steps
    try:
        return validate(apply_overrides(values, args.set))
    except ConfigError as e:
        raise DemoError("bad training settings: " + "; ".join(e.lines), 2) from None


def _run(args, echo, t0: float) -> dict:
    from .toy import checker
    from .toy.demo_data import TRIGGER, demo_prompts, write_demo_dataset

    if args.images < 1:
        raise DemoError(f"--images {args.images}: give how many images to generate with and without the LoRA "
                        "(1 or more)", 2)
    if args.steps is not None and args.steps < 0:
        raise DemoError(f"--steps {args.steps}: give 0 (the preset's length) or more", 2)
    model = Path(args.model)
    if not (model / "model_index.json").is_file():
        raise DemoError(f"The toy base model is missing at {model}. Build it with "
                        f"`python -m core.toy.build --out {model}` (or --quick for a rough one).", 2)
    out = Path(args.out)
    data_dir = write_demo_dataset(out / "dataset")
    echo(f"Demo dataset: {data_dir / '10_zqx'} (16 stars, trigger word '{TRIGGER}')")
    cfg = _config(args, data_dir, out)

    import torch

    torch.set_num_threads(int(os.environ.get("DEMO_THREADS", "2")))
    from .train.trainer import Trainer

    echo(f"Training a LoRA on {model} with the '{PRESET}' preset")
    t_train = time.time()
    code = Trainer(cfg, overwrite=True, echo=echo).train()
    train_s = time.time() - t_train
    if code != 0:
        raise DemoError(f"training failed (exit code {code}); see {out / OUTPUT_NAME / 'train.log'}", code)
    lora_path = out / f"{OUTPUT_NAME}.safetensors"

    from .toy.measure import generate, load_toy, save_grid

    echo(f"Generating {args.images} images without and with the LoRA")
    t_gen = time.time()
    pipe = load_toy(model)
    items = demo_prompts(args.images)
    prompts = [p for p, _, _ in items]
    seeds = [100 + i for i in range(len(items))]
    base = generate(pipe, prompts, seeds)
    problems = _load_lora(pipe, lora_path)
    with_lora = generate(pipe, prompts, seeds)
    gen_s = time.time() - t_gen

    score_base = checker.concept_score(base, "star")
    score_lora = checker.concept_score(with_lora, "star")
    colors_ok = sum(checker.classify(im).color == c for im, (_, c, _) in zip(with_lora, items)) / len(items)
    grid = out / "compare.png"
    save_grid(base + with_lora, grid, cols=len(base), scale=3)
    learned = score_lora >= LEARNED[0] and score_base < LEARNED[1]
    echo(f"Stars without the LoRA: {score_base:.0%}; with it: {score_lora:.0%} "
         f"({'learned' if learned else 'NOT learned'}). Top row without, bottom row with: {grid}")
    return {
        "concept_score_base": round(score_base, 3),
        "concept_score_lora": round(score_lora, 3),
        "concept_learned": learned,
        "color_right_lora": round(colors_ok, 3),
        "lora_path": str(lora_path),
        "lora_load_problems": problems,
        "compare_image": str(grid),
        "run_dir": str(out / OUTPUT_NAME),
        "model": str(model),
        "steps": _total_steps(out / OUTPUT_NAME),
        "images": len(items),
        "train_seconds": round(train_s, 1),
        "generate_seconds": round(gen_s, 1),
        "seconds": round(time.time() - t0, 1),
    }


def _load_lora(pipe, path: Path) -> list[str]:
    """Load the LoRA the way users do (diffusers), returning any unexpected/missing-key complaints."""
    import logging

    records: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    h = Catch(logging.WARNING)
    names = ("diffusers", "peft", "transformers")
    for n in names:
        logging.getLogger(n).addHandler(h)
    try:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(path), adapter_name="demo")
        records += [str(w.message) for w in caught]
    finally:
        for n in names:
            logging.getLogger(n).removeHandler(h)
    marks = ("unexpected", "missing", "not loaded", "were not used", "not found", "no lora keys")
    found = [r for r in records if any(m in r.lower() for m in marks)]
    # A UNet-only LoRA has no text-encoder keys; diffusers says so, and that is fine.
    return [r for r in found if not r.startswith("No LoRA keys associated to CLIPTextModel")]


def _total_steps(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "status.json").read_text(encoding="utf-8")).get("step"))
    except (OSError, ValueError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core demo", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
