"""`python -m core lora inspect|check|merge|resize|extract|convert`."""
from __future__ import annotations

import argparse
import sys

from .common import Summary, json_dumps
from .lorafile import ToolError
from .lowrank import DYNAMIC

PRECISIONS = ("fp16", "bf16", "float")
CONFIG_HELP = ("A diffusers folder whose configs describe a single-file model (as base_config_dir in training); "
               "only for checkpoints of a non-standard layout.")


def _progress(done: int, total: int, text: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{text[:110]:<110}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    elif done in (0, total) or done % max(total // 10, 1) == 0:
        print(text, file=sys.stderr, flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lora_command", required=True)
    q = sub.add_parser("inspect", help="What a LoRA file holds: family, format, ranks, modules per part, metadata.")
    q.add_argument("file")
    q.add_argument("--json", action="store_true", help="Print JSON (keys: family, format, modules, rank, alpha, ...).")

    q = sub.add_parser("check", help="Does a LoRA fit a base model (family, and how many modules map to its layers).")
    q.add_argument("file")
    q.add_argument("--base", required=True, help="Base model: diffusers folder or single-file checkpoint.")
    q.add_argument("--config-dir", default="", help=CONFIG_HELP)
    q.add_argument("--json", action="store_true")

    q = sub.add_parser("merge", help="Merge LoRAs into one LoRA (exact sum, or --rank N by SVD), or with --base into a "
                                     "checkpoint.")
    q.add_argument("--lora", action="append", required=True, metavar="FILE[:STRENGTH]",
                   help="A LoRA and its strength (default 1); repeat for each LoRA. Negative strengths subtract.")
    q.add_argument("--base", help="Merge into this base model and write a single-file checkpoint.")
    q.add_argument("--rank", type=int, help="LoRA merge only: re-factor the sum to this rank (SVD) instead of stacking "
                                            "ranks exactly.")
    q.add_argument("--format", choices=("kohya", "diffusers"), help="Key form of a merged LoRA (default: kohya for "
                                                                     "SD, diffusers for Flux).")
    q.add_argument("--config-dir", default="", help=CONFIG_HELP)
    q.add_argument("--clip-l", default="", help="Flux with --base: the clip_l file to merge CLIP-L modules into "
                                                "(written as <out>_clip_l.safetensors).")
    q.add_argument("--skip-unmatched", action="store_true", help="With --base: apply what maps and list the rest "
                                                                  "(default: refuse).")
    _common(q, default_precision=None)

    q = sub.add_parser("resize", help="Lower a LoRA's rank by SVD, keeping its strength.")
    q.add_argument("file")
    q.add_argument("--rank", type=int, help="New rank (with --dynamic: the largest rank).")
    q.add_argument("--dynamic", choices=DYNAMIC, help="Choose each module's rank by its singular values.")
    q.add_argument("--param", type=float, help="sv_ratio: keep sigma > sigma_max/X (X >= 1); sv_fro / sv_cumulative: "
                                               "keep this fraction (0-1).")
    q.add_argument("--format", choices=("kohya", "diffusers"))
    _common(q, default_precision=None, names_base=True)

    q = sub.add_parser("extract", help="Extract a LoRA from the difference between a tuned and a base model.")
    q.add_argument("--base", required=True, help="The original model.")
    q.add_argument("--tuned", required=True, help="The fine-tuned model (same family and architecture).")
    q.add_argument("--rank", type=int, default=32)
    q.add_argument("--conv-rank", type=int, default=0, help="Rank for 3x3 convolutions (0 = leave them out, said so).")
    q.add_argument("--clamp-quantile", type=float, default=0.99, help="Clip factor values at this quantile (1 = off).")
    q.add_argument("--min-diff", type=float, default=0.01, help="A text encoder that changed by at most this is "
                                                                "left out (and reported).")
    q.add_argument("--format", choices=("kohya", "diffusers"))
    q.add_argument("--config-dir", default="", help=CONFIG_HELP)
    _common(q, default_precision="fp16")

    q = sub.add_parser("convert", help="Convert between kohya keys and diffusers/peft keys (same applied change).")
    q.add_argument("file")
    q.add_argument("--to", required=True, choices=("kohya", "diffusers"))
    _common(q, default_precision=None, names_base=True)


def _common(q: argparse.ArgumentParser, default_precision: str | None, names_base: bool = False) -> None:
    q.add_argument("--out", required=True, help="Output .safetensors file.")
    q.add_argument("--save-precision", choices=PRECISIONS, default=default_precision,
                   help="Saved dtype (default: the input's; fp16 for checkpoints and extraction).")
    q.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    q.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    if names_base:
        q.add_argument("--base", help="The model the LoRA is for, read only for its layer names (default: the "
                                      "family's standard layout).")


def _print_summary(s: Summary, as_json: bool) -> None:
    print(json_dumps(s.to_dict()) if as_json else "\n".join(s.lines()))


def run(args: argparse.Namespace) -> int:
    from . import inspect as insp
    from . import model_ops, ops

    try:
        c = args.lora_command
        if c == "inspect":
            info = insp.inspect_lora(args.file)
            print(json_dumps(info) if args.json else "\n".join(insp.inspect_lines(info)))
            return 0
        if c == "check":
            res = insp.check_lora(args.file, args.base, args.config_dir)
            print(json_dumps(res) if args.json else res["message"])
            return 0 if res["ok"] else 1
        if c == "merge" and args.base:
            if args.rank or args.format:
                raise ToolError("--rank and --format are for merging LoRAs into a LoRA; with --base the output is a "
                                "checkpoint")
            s = model_ops.merge_into_base(args.base, args.lora, args.out, save_precision=args.save_precision,
                                          skip_unmatched=args.skip_unmatched, config_dir=args.config_dir,
                                          clip_l=args.clip_l,
                                          overwrite=args.overwrite,
                                          progress=_progress)
        elif c == "merge":
            s = ops.merge_loras(args.lora, args.out, rank=args.rank, fmt=args.format, save_precision=args.save_precision,
                                overwrite=args.overwrite, progress=_progress)
        elif c == "resize":
            s = ops.resize_lora(args.file, args.out, rank=args.rank, dynamic=args.dynamic, param=args.param,
                                fmt=args.format, save_precision=args.save_precision, base=args.base,
                                overwrite=args.overwrite, progress=_progress)
        elif c == "extract":
            s = model_ops.extract_lora(args.base, args.tuned, args.out, rank=args.rank, conv_rank=args.conv_rank,
                                       clamp=args.clamp_quantile, min_diff=args.min_diff,
                                       save_precision=args.save_precision, fmt=args.format,
                                       config_dir=args.config_dir, overwrite=args.overwrite,
                                       progress=_progress)
        else:
            s = ops.convert_lora(args.file, args.to, args.out, save_precision=args.save_precision, base=args.base,
                                 overwrite=args.overwrite, progress=_progress)
    except ToolError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    _print_summary(s, args.json)
    return 0
