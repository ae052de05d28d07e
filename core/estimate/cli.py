"""`python -m core estimate`: predicted peak VRAM of a config, its parts, and what makes it fit a card."""
from __future__ import annotations

import argparse
import json
import sys

from .. import families
from ..cli_args import positive_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (as for `python -m core train`).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override one key (repeatable).")
    p.add_argument("--family", choices=families.names(),
                   help="Model family, when the base model is not on this computer (the shipped configs are used).")
    p.add_argument("--vram", type=positive_float, metavar="GB",
                   help="Your GPU's memory: says whether it fits and what to change.")
    p.add_argument("--json", action="store_true", help="Print the estimate as JSON.")


def _text(e) -> str:
    lines = [f"Estimated peak VRAM: {e.peak_vram_gb:.1f} GB ({e.family}, {e.phase} phase; training "
             f"{e.training_gb:.1f} GB, caching {e.caching_gb:.1f} GB)"]
    names = {"base_weights": "base weights", "text_encoders": "text encoders on the GPU", "vae": "VAE on the GPU",
             "lora_and_optimizer": "LoRA + gradients + optimizer", "activations": "activations",
             "overhead": "CUDA context / workspace", "fragmentation": "allocator slack",
             "swapped_to_ram": "swapped to RAM (not counted)"}
    for k, v in e.parts.items():
        lines.append(f"  {names.get(k, k):32s} {v:7.2f} GB")
    s = e.settings
    lines.append(f"  ({s['resolution']} px, batch {s['train_batch_size']}, rank {s['network_dim']}, base "
                 f"{s['base_precision']}, blocks_to_swap {s['blocks_to_swap']}, gradient checkpointing "
                 f"{'on' if s['gradient_checkpointing'] else 'off'}, {s['optimizer_type']})")
    lines += [f"Note: {n}" for n in e.notes]
    if e.vram_gb is not None:
        if e.fits:
            lines.append(f"Fits in {e.vram_gb:g} GB.")
        else:
            lines.append(f"Does not fit in {e.vram_gb:g} GB. Cheapest changes, one after the other:")
            for sug in e.suggestions:
                sets = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sug["set"].items())
                lines.append(f"  - {sug['change']}: {sets} -> {sug['peak_vram_gb']:.1f} GB"
                             + (" (fits)" if sug["fits"] else ""))
            if not e.suggestions or not e.suggestions[-1]["fits"]:
                lines.append("  Even then it does not fit: lower network_dim or the resolution further.")
    lines.append("An estimate from published figures, not a measurement (docs/benchmarks.md).")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..config.toml_io import ConfigError, apply_overrides, read_toml, validate
    from .vram import estimate, suggest

    try:
        data = read_toml(args.config) if args.config else {}
        cfg = validate(apply_overrides(data, args.set))
        e = suggest(cfg, args.vram, args.family) if args.vram else estimate(cfg, args.family)
    except ConfigError as e:
        print("Config error:", file=sys.stderr)
        for line in e.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(e.to_dict(), indent=2) if args.json else _text(e))
    return 0
