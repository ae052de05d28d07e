"""`python -m core <command>`: the headless entry point the GUI also uses."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, get_origin

from .config.fields import all_fields
from .config.params import GROUPS
from .config.schema import TrainConfig


def _add_schema_options(parser: argparse.ArgumentParser) -> None:
    """One --option per schema field, grouped as in the GUI, with the field's help text."""
    groups = {g: parser.add_argument_group(title) for g, title in GROUPS.items()}
    for f in all_fields():
        ann = f["annotation"]
        kw: dict[str, Any] = {"dest": f"opt_{f['name']}", "default": None}
        default = f["default"]
        extra = f" (default: {default!r})" if default not in ("", [], None) else ""
        if ann is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(ann) is list:
            kw["nargs"] = "*"
            kw["metavar"] = "TEXT"
        elif "choices" in f:
            kw["choices"] = f["choices"]
        else:
            kw["metavar"] = "VALUE"
        groups[f["group"]].add_argument(f"--{f['name']}", help=f["help"] + extra, **kw)


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="Train a LoRA (headless).", description="Train a LoRA. Values come from the "
                       "--config TOML, then --option flags, then --set key=value (later wins).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="TOML config file (keys as in sd-scripts).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override one key (repeatable).")
    p.add_argument("--resume", action="store_true", help="Continue the run in <output_dir>/<output_name> from its saved state.")
    p.add_argument("--overwrite", action="store_true", help="Start the run again even if its run folder exists.")
    p.add_argument("--print-config", action="store_true", help="Print the effective config as TOML and exit.")
    _add_schema_options(p)
    return p


def _run_train(args: argparse.Namespace) -> int:
    from .config.toml_io import ConfigError, apply_overrides, read_toml, to_toml, validate

    try:
        data = read_toml(args.config) if args.config else {}
        for name in TrainConfig.model_fields:
            v = getattr(args, f"opt_{name}")
            if v is not None:
                data[name] = v
        cfg = validate(apply_overrides(data, args.set))
    except ConfigError as e:
        print("Config error:", file=sys.stderr)
        for line in e.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_toml(cfg, grouped=True))
        return 0
    from .train.process import skip_bitsandbytes, skip_triton
    from .train.trainer import Trainer

    skip_bitsandbytes(cfg)  # this process trains only this config
    skip_triton()
    return Trainer(cfg, resume=args.resume, overwrite=args.overwrite, echo=lambda m: print(m, flush=True)).train()


PIPE = "\\|"


def config_reference() -> str:
    """Markdown reference of every training parameter, generated from the schema."""
    out = ["# Training parameters", "",
           "Generated from `core/config/schema.py` by `python -m core config-reference`. Names follow kohya's sd-scripts.",
           "Basic parameters are shown up front in the GUI; the others are under Advanced. Those marked *yours* are",
           "your own inputs (your model and its files, folders, names, words): choosing a preset or the guided start",
           "keeps them and resets every other parameter it does not set to its default.", ""]
    fields = all_fields()
    for group, title in GROUPS.items():
        out += [f"## {title}", "", "| key | default | allowed | level | what it does |", "|---|---|---|---|---|"]
        for f in (f for f in fields if f["group"] == group):
            allowed = ", ".join(map(str, f["choices"])) if "choices" in f else " ".join(
                f"{sym}{f[k]}" for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in f)
            default = "" if f["default"] in ("", None, []) else repr(f["default"]).replace("|", PIPE)
            level = ("basic" if f["basic"] else "advanced") + (", *yours*" if f["own"] else "")
            text = f["help"].replace("|", PIPE)
            out.append(f"| `{f['name']}` | {default} | {allowed} | {level} | {text} |")
        out.append("")
    return "\n".join(out)


# Subcommands kept in their own modules: each has add_arguments(parser) and run(args) -> exit code.
SUBCOMMANDS = [
    ("convert-config", ".convert_config", "Convert a kohya_ss .json or sd-scripts .toml config to ours."),
    ("demo", ".demo", "Train a LoRA on the built-in toy model and check that it learned (offline, CPU, ~3 min)."),
    ("dataset", ".dataset_tools.cli", "Check a dataset folder, or prepare a kohya-layout copy of it (resize, crop, fix)."),
    ("caption", ".caption.cli", "Caption the images of a folder (BLIP, CLIP Interrogator, WD14 tags, Florence-2)."),
    ("lora", ".lora.tools.cli", "LoRA tools: inspect, check against a base model, merge, resize, extract, convert."),
    ("estimate", ".estimate.cli", "Estimate the peak VRAM of a config and what to change to fit your GPU."),
    ("suggest", ".config.suggest_cli", "Suggest a starting config for your GPU's VRAM, image count and subject."),
    ("queue", ".runs.queue_cli", "The run queue: add trainings that start one after another; list, reorder, remove."),
    ("models", ".models.models_cli", "Recommended base models: list the catalog, download one (resumable, verified)."),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="LoRA Workshop: train and use LoRAs for Stable Diffusion.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub).set_defaults(func=_run_train)
    p = sub.add_parser("config-reference", help="Print the reference of every training parameter (Markdown).")
    p.set_defaults(func=lambda a: print(config_reference()) or 0)
    for name, module, help_text in SUBCOMMANDS:
        try:
            mod = importlib.import_module(module, __package__)
        except ImportError as e:  # a missing optional module must not break the other commands
            if not (e.name or "").startswith(("core.", module.lstrip("."))):
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    try:
        from . import doctor

        p = sub.add_parser("doctor", help="Check this installation (GPU, libraries, disk).")
        p.add_argument("--offline", action="store_true", help="Skip the check that the Hugging Face hub answers.")
        p.set_defaults(func=lambda a: doctor.main(["--offline"] if a.offline else []))
    except ImportError:
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    from .logs import quiet_library_notices

    quiet_library_notices()  # every subcommand (caption, demo, train ...) may import bitsandbytes
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args, argv)


def run_guarded(func, args: argparse.Namespace, argv: list[str]) -> int:
    """The one error boundary of the command line: the project's own errors and the operating system's become a
    message naming the file or option and an exit code (core/failures.py), never a traceback; a bug's traceback
    goes to logs/errors.log with a one-line summary here."""
    from . import failures

    try:
        return int(func(args) or 0)
    except BaseException as e:  # noqa: BLE001 - this is the boundary
        if isinstance(e, SystemExit):
            raise
        known = failures.explain(e)
        sys.stdout.flush()
        if known is not None:
            message, code = known
            print(f"Error: {message}", file=sys.stderr, flush=True)
            return code
        summary, log = failures.report_bug(e, argv)
        print(f"{summary}\nThe details are in {log}: please attach that file to a bug report.", file=sys.stderr,
              flush=True)
        return failures.EXIT_BUG
