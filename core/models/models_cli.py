"""`python -m core models list | get`: the catalog of recommended base models, and downloading one of them."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..failures import PROJECT_ROOT, size_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", help="The catalog: each model's files, size, licence, whether it is gated, its GPU.")
    ls.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    get = sub.add_parser("get", help="Download a catalog model into a folder: resumable, checked against sha256. "
                                     "Exit 0 only when every file is complete and verified.")
    get.add_argument("name", help="The model's name in the catalog (see `models list`).")
    get.add_argument("--to", default=str(PROJECT_ROOT / "models"),
                     help="The folder the files go to (default: the project's models folder).")
    get.add_argument("--status", metavar="FILE", help="Also keep FILE (JSON) up to date: state, bytes done and in all, "
                                                      "what is happening, the error (the GUI shows it from there).")
    for q in (ls, get):
        q.add_argument("--catalog", action="append", default=[], metavar="FILE",
                       help="A catalog file of your own ([[model]] tables, as core/models/catalog.toml); repeatable.")


def _entries(args):
    from .catalog import load_catalog

    return load_catalog(args.catalog)


def run(args: argparse.Namespace) -> int:
    entries = _entries(args)
    if args.models_command == "list":
        if args.json:
            print(json.dumps([e.as_dict() for e in entries], indent=1))
            return 0
        from .. import families

        for e in entries:
            gate = "gated: accept the licence and set a token" if e.gated else "not gated"
            tier = f", {e.vram_tier} GB GPU and up" if e.vram_tier else ""
            print(f"{e.name}: {e.title}\n  {families.title(e.family)}, {size_text(e.size)} in {len(e.files)} "
                  f"file(s), licence {e.license}, {gate}{tier}\n  from {e.repo}")
        return 0
    from .catalog import find_entry
    from .download import get_model

    entry = find_entry(entries, args.name)
    last = [0.0]
    status = Path(args.status) if args.status else None

    def write_status(state: str, done: int, total: int, words: str) -> None:
        if status is not None:
            from ..config.toml_io import atomic_write_text

            atomic_write_text(status, json.dumps({"name": entry.name, "title": entry.title, "state": state,
                                                  "done": done, "total": total, "words": words}))

    def progress(done: int, total: int, words: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or done >= total or not words.startswith("Downloading"):
            last[0] = now
            print(words, flush=True)
            write_status("running", done, total, words)

    if entry.gated:
        print(f"{entry.name} comes from a gated repo: if the download is refused, accept the licence at "
              f"{entry.licence_page} and set HF_TOKEN.", file=sys.stderr)
    from .download import DownloadError

    write_status("running", 0, entry.size, "Starting")
    try:
        paths = get_model(entry, Path(args.to), progress=progress)
    except (DownloadError, OSError) as e:
        write_status("failed", 0, entry.size, str(e))
        raise
    except BaseException:
        write_status("failed", 0, entry.size, "Stopped before the download was complete; start it again to resume.")
        raise
    write_status("completed", entry.size, entry.size, f"{len(paths)} file(s) complete and verified")
    print(f"{entry.title}: {len(paths)} file(s) complete and verified in {Path(args.to).expanduser()}:")
    for p in paths:
        print(f"  {p}")
    return 0
