"""What the Tools tab does: one plain function per tool (inspect, check, merge, resize, extract, convert) that takes
the form's values, calls core.lora.tools (the same code as `python -m core lora ...`) and returns what the page
shows. No gradio here; core.lora.tools imports torch, so it is imported inside the functions only.

The writing tools return an `Outcome`: the HTML of the result line(s) and the file written ("" when nothing was).
A tool's error (a missing file, a LoRA of another family, an output that exists without "Overwrite") is an error
line naming the file, never an exception."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from .tools_view import check_html, error_html, error_of, inspect_html, output_path, raw_metadata, stem, summary_html

Progress = Callable[[int, int, str], None]


class Outcome(NamedTuple):
    html: str  # what the result box shows
    written: str = ""  # the file written ("" when nothing was)


def lora_folder(settings: Any) -> str:
    """Where new LoRAs go: the LoRA folder (Settings), else the outputs folder."""
    return settings.loras_dir or settings.outputs_dir


def _done(summary, note: str = "") -> Outcome:
    return Outcome(summary_html(summary, note), str(summary.out or ""))


def inspect(pick: str | None, path: str | None) -> tuple[str, str, str, dict]:
    """(status line(s), the LoRA + training tables, the parts + tags tables, the raw metadata); a path wins."""
    target = (path or "").strip() or pick
    if not target:
        return error_html("Choose a LoRA from the list, or write the path of a file."), "", "", {}
    from core.lora.tools import inspect_lora

    try:
        info = inspect_lora(target)
    except Exception as e:  # noqa: BLE001 - shown as an error line
        return error_of(e), "", "", {}
    head, left, right = inspect_html(info)
    return head, left, right, raw_metadata(info["metadata"])


def check(lora: str | None, model: str | None, config_dir: str | None) -> str:
    """Whether the LoRA fits the base model: a green line, or a red one with the modules that map to no layer."""
    if not lora or not model:
        return error_html("Choose a LoRA and a base model.")
    from core.lora.tools import check_lora

    try:
        return check_html(check_lora(lora, model, (config_dir or "").strip()))
    except Exception as e:  # noqa: BLE001
        return error_of(e)


def merge(lora_dir: str, models_dir: str, picks: Sequence[str | None], strengths: Sequence[float | None],
          base: str | None, rank: float | None, name: str | None, precision: str | None, overwrite: bool,
          progress: Progress | None = None) -> Outcome:
    """The LoRAs at their strengths (0 or empty rows left out) into a new LoRA in `lora_dir`, or, with a `base`
    model, into a checkpoint in `models_dir`."""
    items = [(p, float(s)) for p, s in zip(picks, strengths) if p and float(s or 0) != 0]
    if not items:
        return Outcome(error_html("Choose at least one LoRA with a strength other than 0."))
    from core.lora.tools import merge_into_base, merge_loras

    first = stem(items[0][0])
    try:
        if base:
            if int(rank or 0):
                return Outcome(error_html("Rank is for merging into a LoRA; a checkpoint holds the full weights. "
                                          "Set the rank to 0, or choose no base model."))
            out = output_path(models_dir, name, f"{stem(base)}_{first}")
            s = merge_into_base(base, items, out, save_precision=precision or "fp16", overwrite=bool(overwrite),
                                progress=progress)
            return _done(s, f"The checkpoint is in {Path(out).parent}: choose it as a base model in Training or "
                            "Generate.")
        out = output_path(lora_dir, name, f"{first}_merged")
        s = merge_loras(items, out, rank=int(rank) if int(rank or 0) > 0 else None, save_precision=precision or None,
                        overwrite=bool(overwrite), progress=progress)
        return _done(s)
    except Exception as e:  # noqa: BLE001
        return Outcome(error_of(e))


def resize(lora_dir: str, lora: str | None, rank: float | None, dynamic: str | None, param: float | None,
           name: str | None, precision: str | None, overwrite: bool, progress: Progress | None = None) -> Outcome:
    """The LoRA at a lower rank (fixed, or per module with a dynamic method), as a new LoRA in `lora_dir`."""
    if not lora:
        return Outcome(error_html("Choose a LoRA to resize."))
    from core.lora.tools import resize_lora

    r = int(rank or 0) or None
    if r is None and not dynamic:
        return Outcome(error_html("Set a rank, or choose a dynamic method (with a rank 0 = no cap)."))
    out = output_path(lora_dir, name, f"{stem(lora)}_{dynamic or 'r'}{r or ''}")
    try:
        return _done(resize_lora(lora, out, rank=r, dynamic=dynamic or None,
                                 param=float(param) if dynamic else None, save_precision=precision or None,
                                 overwrite=bool(overwrite), progress=progress))
    except Exception as e:  # noqa: BLE001
        return Outcome(error_of(e))


def extract(lora_dir: str, base: str | None, tuned: str | None, rank: float | None, conv_rank: float | None,
            clamp: float, min_diff: float, config_dir: str | None, name: str | None, precision: str | None,
            overwrite: bool, progress: Progress | None = None) -> Outcome:
    """A LoRA of what `tuned` changed compared with `base`, as a new LoRA in `lora_dir`."""
    if not base or not tuned:
        return Outcome(error_html("Choose the base model and the fine-tuned model."))
    from core.lora.tools import extract_lora

    out = output_path(lora_dir, name, f"{stem(tuned)}_extracted_r{int(rank or 0)}")
    try:
        return _done(extract_lora(base, tuned, out, rank=int(rank or 0), conv_rank=int(conv_rank or 0),
                                  clamp=float(clamp), min_diff=float(min_diff), save_precision=precision or "fp16",
                                  config_dir=(config_dir or "").strip(), overwrite=bool(overwrite),
                                  progress=progress))
    except Exception as e:  # noqa: BLE001
        return Outcome(error_of(e))


def convert(lora_dir: str, lora: str | None, to: str, name: str | None, precision: str | None, overwrite: bool,
            progress: Progress | None = None) -> Outcome:
    """The LoRA with the other key names (`to`: kohya or diffusers), as a new LoRA in `lora_dir`."""
    if not lora:
        return Outcome(error_html("Choose a LoRA to convert."))
    from core.lora.tools import convert_lora

    out = output_path(lora_dir, name, f"{stem(lora)}_{to}")
    try:
        return _done(convert_lora(lora, to, out, save_precision=precision or None, overwrite=bool(overwrite),
                                  progress=progress))
    except Exception as e:  # noqa: BLE001
        return Outcome(error_of(e))
