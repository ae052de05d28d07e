"""`python -m core suggest`: a starting config for a family, a GPU's VRAM, a dataset and a subject, with reasons."""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .recipes import FAMILIES, SUBJECTS

    subjects = sorted({n for s in SUBJECTS.values() for n in (s.name, *s.aliases)})
    p.add_argument("--family", required=True, choices=[*FAMILIES, "flux-dev"], help="The base model's family.")
    p.add_argument("--vram", required=True, type=float, metavar="GB", help="Your GPU's memory in GB (e.g. 8, 12, 24).")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--images", type=int, metavar="N", help="How many training images you have.")
    g.add_argument("--data", metavar="DIR", help="Or: the train_data_dir (its <repeats>_<name> folders are counted); "
                                                 "it is put into the config.")
    p.add_argument("--subject", default="character", choices=subjects,
                   help="What the LoRA is of: character/person, style, concept/object/product, clothing.")
    p.add_argument("--json", action="store_true", help="Print JSON: config (schema keys), reasons, fits, peak_vram_gb.")
    p.add_argument("--out", metavar="FILE", help="Also write the config as TOML (for `python -m core train --config`).")


def _count(data: str) -> int:
    from ..runs.steps_plan import scan_concepts

    folders, problems = scan_concepts(data)
    n = sum(f.images for f in folders)
    if n == 0:
        raise ValueError("--data: " + (" ".join(problems) or f"no images in {data}"))
    return n


def run(args: argparse.Namespace) -> int:
    from .suggest import suggest_config
    from .toml_io import ConfigError, save_config, validate

    try:
        if args.images is not None and args.images < 1:
            raise ValueError(f"--images {args.images}: give how many training images you have (1 or more)")
        images = _count(args.data) if args.data else args.images
        s = suggest_config(args.family, args.vram, images, args.subject)
        if args.data:
            s.values["train_data_dir"] = args.data
        if s.fits and args.out:
            save_config(validate(s.values), args.out)
    except (ValueError, ConfigError) as e:
        lines = e.lines if isinstance(e, ConfigError) else [str(e)]
        print("Error: " + "\n  ".join(lines), file=sys.stderr)
        return 2
    if args.json:
        d = s.to_dict()
        print(json.dumps({"config": d.pop("values"), **d}, indent=2))
    else:
        print(f"{s.family}, {s.subject}, {s.vram_gb:g} GB, {s.images} images:")
        print("\n".join(f"  - {r}" for r in s.reasons))
        if s.fits:
            print("\nConfig (only the suggested keys; add pretrained_model_name_or_path and train_data_dir):\n")
            print(to_toml_partial(s.values))
            if args.out:
                print(f"Written to {args.out} (every key, defaults filled in).")
    if not s.fits:
        print(s.message, file=sys.stderr)
        return 1
    return 0


def to_toml_partial(values: dict) -> str:
    import tomli_w

    return tomli_w.dumps({k: v for k, v in values.items() if v is not None})
