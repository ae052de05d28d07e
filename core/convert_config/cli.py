"""python -m core convert-config: arguments, output and report."""
from __future__ import annotations

import argparse
import sys

from ..config.toml_io import ConfigError, atomic_write_text
from .converter import convert_file
from .report import render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="kohya_ss GUI config (.json, as saved by 'Save config') or sd-scripts "
                                       "config (.toml, as given to --config_file)")
    parser.add_argument("-o", "--output", help="write the TOML to this file instead of standard output")


def run(args: argparse.Namespace) -> int:
    try:
        c = convert_file(args.source)
    except ConfigError as e:
        for line in e.lines:
            print(f"# error: {line}", file=sys.stderr)
        return 2
    text = render(c)
    for line in c.report:
        print("# " + line, file=sys.stderr)
    if getattr(args, "output", None):
        atomic_write_text(args.output, text)
        print(f"# written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core convert-config",
                                     description="Convert a kohya_ss GUI .json or sd-scripts .toml config to ours. "
                                                 "The TOML goes to stdout, the report to stderr.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
