"""What the Generate tab does, as plain functions (no gradio, no torch at import): the LoRA lists and rows, what the
base model's family changes, how the controls' values become a call to core.generation.engine.Generator, the
messages for bad inputs and failures, and what a finished generation / grid shows. ``ui/generate_tab.py`` lays out
the controls and turns these values into Gradio updates.

Messages are plain text; the tab escapes them for the toast (which renders HTML).
"""
from __future__ import annotations

import html
import os
import re
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from core import families
from core.families import Sampling

from .generate_choices import (SIZES_SEEN, base_family, generated_dir, lora_choices, lora_dirs, lora_notes,
                               native_size, setting)

LORA_SLOTS = 4
DEFAULT_STRENGTHS = "0, 0.5, 0.8, 1.0"

_GENERATOR = None
_GEN_LOCK = threading.Lock()


class InputError(ValueError):
    """Something the user has to change (or a failure explained in words): the text of the toast."""


# --------------------------------------------------------------------------- the engine
def generator(settings: Any, ctx: Any = None):
    """The one Generator of the app, pointed at the current folders (the Settings tab may have changed them)."""
    global _GENERATOR
    from core.generation.engine import Generator

    with _GEN_LOCK:
        if _GENERATOR is None:
            _GENERATOR = Generator(generated_dir(settings))
        _GENERATOR.outputs_dir = generated_dir(settings)
        _GENERATOR.lora_dirs = lora_dirs(settings, ctx)
        from core.models.choose import find_parts  # what a transformer-only Flux / klein file needs

        models_dir = setting(settings, "models_dir")
        _GENERATOR.find_parts = lambda model: find_parts(models_dir, model)
        return _GENERATOR


def unload_model() -> str:
    """Free the Generate tab's model (GPU memory), e.g. before a training starts. Returns what was unloaded."""
    gen = _GENERATOR
    if gen is None or gen.pipe is None:
        return ""
    name = Path(gen.model).name
    gen.unload()
    return name


def unload_text(name: str) -> str:
    """The status line after "Unload model" (``name``: what unload_model returned)."""
    if not name:
        return "No model is loaded."
    return f"Unloaded {name}: its memory is free. The next generation loads it again."


def allow_path(blocks: Any, ctx: Any, path: Path) -> None:
    """Let Gradio serve the saved images (they may live outside the project folder)."""
    if ctx is not None and hasattr(ctx, "allow"):
        ctx.allow(path)
        return
    if blocks is None:
        return
    p = str(Path(path).resolve())
    allowed = blocks.allowed_paths
    if not any(p == str(a) or p.startswith(str(a).rstrip(os.sep) + os.sep) for a in allowed):
        allowed.append(p)


def error_text(e: Exception) -> str:
    """What the user reads when generating failed: the engine's own words for known mistakes, a plain sentence for
    running out of GPU memory, else the exception's type and first line (its traceback goes to the console)."""
    from core.generation.lora_files import GenerateError

    if isinstance(e, (GenerateError, ValueError, FileNotFoundError)):
        return str(e)
    text = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
    if "out of memory" in text.lower():
        return ("The GPU ran out of memory: lower the width/height or the batch count, or close other "
                "programs using the GPU.")
    traceback.print_exc()
    return f"{type(e).__name__}: {text}"


def progress_to(report: Callable[..., Any]) -> Callable[[float, str], None]:
    """The engine's progress(fraction, text) as a call of Gradio's progress bar (fraction kept in 0..1)."""
    return lambda f, text: report(min(max(f, 0.0), 1.0), desc=text)


# --------------------------------------------------------------------------- LoRA pickers
def row_visibility(picks: Sequence[str | None]) -> list[bool]:
    """Which LoRA rows show: the first always, then each chosen one and one empty row after the last chosen."""
    return [i == 0 or bool(picks[i]) or bool(picks[i - 1]) for i in range(LORA_SLOTS)]


def pick_notes(model: str, picks: Sequence[str | None]) -> str:
    """Markdown under the LoRA pickers for the chosen files: trigger words, family warnings."""
    return lora_notes([p for p in picks if p], base_family(model))


@dataclass
class LoraLists:
    choices: list[tuple[str, str]]  # (label, path) of the LoRA files found, newest first
    picks: list[str | None]  # what each LoRA dropdown keeps (None: cleared)
    grid: list[str]  # what the grid's files keep
    notes: str  # markdown about the chosen LoRAs
    rows: list[bool]  # which LoRA rows show


def lora_lists(settings: Any, ctx: Any, model: str, picks: Sequence[str | None], grid: Sequence[str] | None
               ) -> LoraLists:
    """The LoRA lists for this base model; a choice stays when it is still listed (or is a file typed in)."""
    family = base_family(model)
    choices, _infos = lora_choices(settings, ctx, family)
    paths = [c[1] for c in choices]
    kept = [v if v in paths or (v and Path(v).is_file()) else None for v in picks]
    return LoraLists(choices, kept, [v for v in grid or [] if v in paths],
                     lora_notes([v for v in picks if v], family), row_visibility(list(picks)))


def follow_size(model: str, width: float, height: float) -> tuple[int | None, int | None]:
    """The new width / height for this model (its native size) or None to leave one as the user set it."""
    size = native_size(model)
    if not size:
        return None, None
    return (size if int(width) in SIZES_SEEN else None), (size if int(height) in SIZES_SEEN else None)


@dataclass
class FamilyControls:
    """What the base model's family samples with (core/families)."""
    negative_prompt: bool
    samplers: bool
    guidance_label: str
    guidance: bool  # the guidance slider shows
    guidance_value: float | None  # a new guidance value, or None to keep the user's
    clip_skip: bool
    steps: int | None  # a new step count (Flux schnell: 4), or None to keep the user's


def family_controls(model: str, cfg: float) -> FamilyControls:
    """Negative prompt, sampler list, guidance (Flux dev: distilled guidance; schnell: none, 4 steps), clip skip.
    The guidance value follows the family only while it is some family's usual value (not one the user chose)."""
    spec = families.find(base_family(model))
    way = spec.sampling_for(model) if spec else Sampling()
    usual = {w.guidance for f in families.all_families() for w in (f.sampling, *f.variant_sampling.values())}
    value = (way.guidance if way.guidance is not None and float(cfg) in usual and float(cfg) != way.guidance
             else None)
    return FamilyControls(way.negative_prompt, way.samplers, way.guidance_label, way.guidance is not None, value,
                          way.clip_skip, way.steps or None)


def newest_epochs(settings: Any, ctx: Any, model: str) -> list[str]:
    """Every saved file of the newest training (same output name, same folder), by epoch: the grid's rows."""
    from core.generation.lora_files import list_loras

    infos = list_loras(lora_dirs(settings, ctx), base_family(model))
    if not infos:
        raise InputError("No LoRA files found in your outputs / LoRA folders.")
    newest = infos[0]
    group = newest.output_name or newest.name
    folder = Path(newest.path).parent
    same = [i for i in infos if (i.output_name or i.name) == group and Path(i.path).parent == folder]
    same.sort(key=lambda i: (i.epoch if i.epoch is not None else 10**9, i.mtime))
    return [i.path for i in same]


# --------------------------------------------------------------------------- requests to the engine
def parse_strengths(text: str) -> list[float]:
    """The grid's columns: numbers separated by commas (or semicolons)."""
    vals = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            vals.append(float(part))
        except ValueError:
            raise InputError(f"Strengths: '{part}' is not a number. Write them like {DEFAULT_STRENGTHS}") from None
    if not vals:
        raise InputError(f"Strengths: give at least one, like {DEFAULT_STRENGTHS}")
    return vals


def _common(model, vae, negative, sampler, steps, cfg, width, height, seed, clip_skip) -> dict:
    return dict(negative=negative or "", seed=int(seed if seed is not None else -1), steps=int(steps),
                guidance=float(cfg), width=int(width), height=int(height), sampler=sampler,
                clip_skip=int(clip_skip), model=model or "", vae=vae or "")


def generate_request(model, vae, picks: Sequence[str | None], strengths: Sequence[float], prompt, negative, sampler,
                     steps, cfg, width, height, seed, batch, clip_skip) -> dict:
    """The keyword arguments of Generator.generate from the controls (the chosen LoRAs with their strengths)."""
    if not (prompt or "").strip():
        raise InputError("Write a prompt first.")
    loras = [(p, float(s)) for p, s in zip(picks, strengths) if p]
    return dict(prompt=prompt, loras=loras, batch_count=int(batch),
                **_common(model, vae, negative, sampler, steps, cfg, width, height, seed, clip_skip))


def grid_request(model, vae, files: Sequence[str] | None, strengths_text: str, prompt, negative, sampler, steps,
                 cfg, width, height, seed, clip_skip) -> dict:
    """The keyword arguments of Generator.compare_grid: rows = LoRA files, columns = strengths."""
    strengths = parse_strengths(strengths_text)
    if not files:
        raise InputError("Choose at least one LoRA file for the rows (or click 'All epochs of the newest "
                         "training').")
    if not (prompt or "").strip():
        raise InputError("Write a prompt first (above).")
    return dict(prompt=prompt, lora_files=list(files), strengths=strengths,
                **_common(model, vae, negative, sampler, steps, cfg, width, height, seed, clip_skip))


def run(call: Callable[..., Any], request: dict, progress: Callable[[float, str], None] | None = None):
    """Call the engine (gen.generate / gen.compare_grid); any failure becomes an InputError with its message."""
    try:
        return call(**request, progress=progress)
    except Exception as e:
        raise InputError(error_text(e)) from e


# --------------------------------------------------------------------------- what a result shows
def short_caption(result) -> str:
    """Gallery caption: the seed and the LoRAs (the full parameters are shown when an image is selected)."""
    first = result.parameters.splitlines()[0] if result.parameters else ""
    loras = [f"{n} {w}" for n, w in re.findall(r"<lora:([^:>]+):([^:>]+)>", first)]
    return " · ".join([f"seed {result.seed}", *loras])


@dataclass
class Generated:
    items: list[tuple[str, str]]  # the gallery: (PNG path, caption)
    status: str  # markdown: what was saved where, and the engine's warnings
    params: list[str]  # the parameters text of each image
    seed: int  # the first image's seed ("Reuse last seed"), -1 when none

    @property
    def first_params(self) -> str:
        return self.params[0] if self.params else ""


def generated(results: Sequence[Any], warnings: Sequence[str], outputs_dir: Path) -> Generated:
    """What a finished generation shows: gallery items, the status line, the parameters and seed."""
    items = [(r.path, short_caption(r)) for r in results]
    seeds = ", ".join(str(r.seed) for r in results)
    names = [Path(r.path).name for r in results if r.path]
    files = names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}" if names else ""
    folder = Path(results[0].path).parent if results and results[0].path else outputs_dir
    text = (f"Done: {len(results)} image{'s' if len(results) != 1 else ''}, seed {seeds}. "
            f"Saved as {files} in `{folder}`.")
    if warnings:
        text += "\n\n" + "\n".join(f"⚠ {html.escape(w)}" for w in warnings)
    return Generated(items, text, [r.parameters for r in results], results[0].seed if results else -1)


def grid_done(res: Any, request: dict) -> tuple[str, str]:
    """(the grid PNG, the status line) of a finished compare grid."""
    seed_line = next((ln for ln in res.parameters.splitlines() if ln.startswith("Steps:")), "")
    rows, cols = len(request["lora_files"]), len(request["strengths"])
    return res.path, f"{rows} × {cols} grid saved as `{res.path}`. {seed_line}"


def selected_params(params: Sequence[str], index: Any) -> str | None:
    """The parameters of the gallery image at ``index`` (an int or [row, col]); None when there is none."""
    i = index if isinstance(index, int) else (index or [0])[0]
    return params[i] if params and 0 <= i < len(params) else None
