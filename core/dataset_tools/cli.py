"""`python -m core dataset check | prepare | captions`.

Exit codes: 0 done (check: no file had to be left out), 1 check found files that must be left out,
2 bad input (folder not found, no usable image, output folder already filled ...).
"""
from __future__ import annotations

import argparse
import sys

from ..cli_args import positive_int
from .captions import bulk_edit, folder_tag_counts
from .inspect import DEFAULT_RESOLUTION, check_folder
from .prepare import CROPS, PrepareError, prepare


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(done: int, total: int, message: str) -> None:
        print(f"\r[{done}/{total}] {message[:70]:<70}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return show


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--caption-ext", default=".txt", help="Extension of the caption files (default .txt).")
    p.add_argument("--quiet", action="store_true", help="No progress line.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", required=True, metavar="{check,prepare,captions}")
    c = sub.add_parser("check", help="Report every problem file of a folder (reads only, changes nothing).",
                       description="Check every image below DIR: unreadable, truncated or not-an-image files, "
                                   "decompression bombs, too small images, duplicates and near duplicates, unusual "
                                   "colour modes, EXIF rotation, missing or non-UTF-8 captions. Changes nothing.")
    c.add_argument("dir", help="Folder of images (searched recursively).")
    c.add_argument("--resolution", type=positive_int, default=DEFAULT_RESOLUTION,
                   help="Training resolution; images whose shorter side is under half of it count as too small.")
    c.add_argument("--json", action="store_true", help="Print the report as JSON.")
    _common(c)
    p = sub.add_parser("prepare", help="Copy the usable images into the kohya layout OUT/<repeats>_<name>/.",
                       description="Check SRC and copy its usable images and captions into OUT/<repeats>_<name>/ "
                                   "(the folder the trainer wants as train_data_dir is OUT). Fixes rotation and colour "
                                   "modes, optionally resizes and crops. The originals are never changed.")
    p.add_argument("src", help="Folder with the original images (searched recursively).")
    p.add_argument("--out", required=True, help="Output folder (use it as train_data_dir).")
    p.add_argument("--name", required=True, help="Concept name, e.g. the trigger word: the folder is <repeats>_<name>.")
    p.add_argument("--repeats", type=int, default=10, help="How often each image is used per epoch (default 10).")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="Scale images down to about this many pixels squared (crop none) or to exactly this square "
                        "(crop center/focus). Default: keep the size.")
    p.add_argument("--crop", choices=CROPS, default="none",
                   help="none: keep the aspect ratio; center: the centred square; focus: the square with the most detail.")
    p.add_argument("--background", default="white", help="Colour that fills transparent parts (name or #rrggbb).")
    p.add_argument("--keep-small", action="store_true", help="Keep images under half the resolution (default: left out).")
    p.add_argument("--overwrite", action="store_true", help="Replace the images and captions already in the output folder.")
    _common(p)
    k = sub.add_parser("captions", help="Bulk caption edits (trigger word, prefix, suffix, replace, remove tags) "
                                        "and the tag frequency table.",
                       description="Edit every caption file below DIR (UTF-8 .txt next to each image); the edits run "
                                   "in the order replace, remove, prefix, suffix, trigger. Without an edit, print the "
                                   "tag frequency table.")
    k.add_argument("dir", help="Folder of images and captions.")
    k.add_argument("--replace", nargs=2, metavar=("FIND", "REPLACEMENT"), help="Replace text in every caption.")
    k.add_argument("--remove-tags", metavar="TAGS", help="Comma-separated tags to remove.")
    k.add_argument("--prefix", help="Text put in front of every caption (joined with a comma).")
    k.add_argument("--suffix", help="Text put after every caption (joined with a comma).")
    k.add_argument("--add-trigger", metavar="WORD", help="Put the trigger word first, where it is missing.")
    k.add_argument("--tags", action="store_true", help="Print the tag frequency table (after the edits).")
    k.add_argument("--dry-run", action="store_true", help="Only say how many captions would change.")
    _common(k)


def _check(args: argparse.Namespace) -> int:
    try:
        report = check_folder(args.dir, resolution=args.resolution, caption_ext=args.caption_ext,
                              progress=_progress(args.quiet))
    except FileNotFoundError as e:
        print(f"dataset check: {e}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.text())
    if not report.images:
        return 2
    return 1 if any(p.severity == "error" for p in report.problems) else 0


def _prepare(args: argparse.Namespace) -> int:
    try:
        result = prepare(args.src, args.out, name=args.name, repeats=args.repeats, resolution=args.resolution,
                         crop=args.crop, background=args.background, keep_small=args.keep_small,
                         caption_ext=args.caption_ext, overwrite=args.overwrite, progress=_progress(args.quiet))
    except PrepareError as e:
        print(f"dataset prepare: {e}", file=sys.stderr)
        return 2
    print(result.text())
    return 0


def _captions(args: argparse.Namespace) -> int:
    edits = [("replace", *(args.replace or ("", ""))), ("remove", args.remove_tags or "", ""),
             ("prefix", args.prefix or "", ""), ("suffix", args.suffix or "", ""),
             ("trigger", args.add_trigger or "", "")]
    edits = [e for e in edits if e[1]]
    try:
        for op, value, value2 in edits:
            result = bulk_edit(args.dir, op, value, value2, caption_ext=args.caption_ext, dry_run=args.dry_run)
            print(("(dry run) " if args.dry_run else "") + result.text(op))
        if args.tags or not edits:
            counts = folder_tag_counts(args.dir, args.caption_ext)
            print(f"{'count':>6}  tag")
            for tag, n in counts:
                print(f"{n:>6}  {tag}")
    except FileNotFoundError as e:
        print(f"dataset captions: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    return {"check": _check, "prepare": _prepare, "captions": _captions}[args.dataset_command](args)
