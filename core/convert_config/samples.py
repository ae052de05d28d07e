"""Sample prompts (inline or from an sd-scripts prompt file) and the sample sampler."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .coerce import blank
from .detect import SD_SCRIPTS
from .report import fmt
from .values import SAMPLER_NEAR, SAMPLERS

if TYPE_CHECKING:
    from .converter import Converter


def prompt_dict_to_line(d: dict[str, Any], flux: bool = False) -> tuple[str, list[str]]:
    """One sd-scripts prompt-file entry (.toml/.json) -> a kohya prompt line, and the options it had to drop.
    For Flux, guidance_scale is the distilled guidance (--g), as in sd-scripts' Flux sampling."""
    text = str(d.get("prompt", "")).strip()
    opts = {"negative_prompt": "n", "width": "w", "height": "h", "seed": "d", "sample_steps": "s", "steps": "s",
            "scale": "l", "guidance_scale": "g" if flux else "l", "cfg_scale": "l", "sample_sampler": "ss",
            "sampler": "ss"}
    parts, dropped = [text], []
    for key, value in d.items():
        if key in ("prompt", "subset"):
            continue
        if key in opts and not blank(value):
            parts.append(f"--{opts[key]} {value}")
        elif not blank(value):
            dropped.append(key)
    return " ".join(p for p in parts if p), dropped


def read_prompt_file(path: Path, flux: bool = False) -> tuple[list[str], list[str]]:
    """Prompts from an sd-scripts prompt file (.txt lines, .toml [prompt]/[[prompt.subset]], .json list)."""
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    dropped: list[str] = []
    if suffix == ".toml":
        data = tomllib.loads(text)
        base = data.get("prompt", {})
        common = {k: v for k, v in base.items() if k != "subset"}
        entries = [{**common, **s} for s in base.get("subset", [])] or ([common] if common.get("prompt") else [])
    elif suffix == ".json":
        loaded = json.loads(text)
        entries = loaded if isinstance(loaded, list) else [loaded]
    else:
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")], []
    lines = []
    for e in entries:
        if isinstance(e, str):
            lines.append(e.strip())
        elif isinstance(e, dict):
            line, lost = prompt_dict_to_line(e, flux)
            lines.append(line)
            dropped += lost
    return [ln for ln in lines if ln], sorted(set(dropped))


def step_samples(cv: Converter) -> None:
    """sample_prompts (inline, or read from a prompt file) and sample_sampler (other spellings -> ours)."""
    if cv.has("sample_prompts"):
        v = cv.take("sample_prompts")
        looks_like_file = isinstance(v, str) and v.strip() and "\n" not in v.strip() and (
            cv.c.kind == SD_SCRIPTS or v.strip().lower().endswith((".txt", ".toml", ".json")))
        if looks_like_file:
            path, cands = cv.find_file(v)
            if path is None and (Path(v.strip()).suffix or "/" in v or "\\" in v):
                cv.unmapped("sample_prompts", v, "prompt file not found; looked at "
                            + ", ".join(str(c) for c in cands))
            elif path is None:
                cv.put("sample_prompts", v)
                cv.note("sample_prompts is not a file name: used as one prompt line")
            else:
                try:
                    lines, dropped = read_prompt_file(path, cv.flux)
                except (OSError, ValueError) as e:
                    cv.unmapped("sample_prompts", v, f"cannot read the prompt file: {e}")
                else:
                    if cv.put("sample_prompts", lines):
                        cv.note(f"sample_prompts = {fmt('x', v)} -> {len(lines)} prompt line(s) read from "
                                f"{path}")
                    if dropped:
                        cv.note(f"prompt file options without an equivalent, dropped: {', '.join(dropped)}")
        elif blank(v):
            cv.ignore("sample_prompts")
        else:
            cv.put("sample_prompts", v)
    if cv.has("sample_sampler"):
        v = cv.take("sample_sampler")
        if blank(v):
            cv.ignore("sample_sampler")
            return
        name = str(v).strip()
        low = name.lower()
        if low in SAMPLERS:
            cv.put("sample_sampler", low)
        elif low in SAMPLER_NEAR:
            ours, why = SAMPLER_NEAR[low]
            cv.put("sample_sampler", ours)
            cv.note(f"sample_sampler = \"{name}\" -> \"{ours}\" ({why})")
        else:
            cv.put("sample_sampler", name)  # validation reports it with the choices
