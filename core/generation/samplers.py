"""Sampler names (as A1111/kohya users know them) -> diffusers schedulers, and PNG parameters."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
}
A1111_NAMES = {"euler": "Euler", "euler_a": "Euler a", "ddim": "DDIM", "dpmsolver++": "DPM++ 2M",
               "dpm++2m_karras": "DPM++ 2M Karras", "pndm": "PLMS", "lms": "LMS", "heun": "Heun"}


def make_scheduler(name: str, base_config: dict):
    import diffusers

    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    cls_name, extra = SAMPLERS[name]
    return getattr(diffusers, cls_name).from_config(dict(base_config), **extra)


@dataclass
class PromptSpec:
    """One prompt line in kohya syntax: `text --n negative --w 512 --h 512 --d seed --s steps --l cfg`
    (and `--g guidance` for Flux dev's distilled guidance, as sd-scripts)."""

    prompt: str
    negative: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int = 20
    cfg: float = 7.0
    extra: dict[str, str] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)  # the flags the line set (the others are defaults)


def parse_prompt_line(line: str) -> PromptSpec:
    parts = (" " + line.strip()).split(" --")
    spec = PromptSpec(parts[0].strip())
    for part in parts[1:]:
        if not part.strip():
            continue
        flag, _, value = part.partition(" ")
        value = value.strip()
        try:
            if flag == "n":
                spec.negative = value
            elif flag == "w":
                spec.width = int(value)
            elif flag == "h":
                spec.height = int(value)
            elif flag == "d":
                spec.seed = int(value)
            elif flag == "s":
                spec.steps = int(value)
            elif flag == "l":
                spec.cfg = float(value)
            elif flag == "g":
                spec.extra[flag] = str(float(value))
            else:
                spec.extra[flag] = value
            spec.given.add(flag)
        except ValueError:
            raise ValueError(f"sample prompt '{line}': --{flag} needs a number, got '{value}'") from None
    return spec


def a1111_parameters(prompt: str, negative: str, steps: int, sampler: str, cfg: float, seed: int,
                     width: int, height: int, model: str = "", loras: list[tuple[str, float]] | None = None) -> str:
    """The PNG 'parameters' text AUTOMATIC1111 writes, so tools that read it show the settings."""
    text = prompt + "".join(f" <lora:{Path(n).stem}:{w:g}>" for n, w in (loras or []) if f"<lora:{Path(n).stem}:" not in prompt)
    lines = [text]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    info = [f"Steps: {steps}", f"Sampler: {A1111_NAMES.get(sampler, sampler)}", f"CFG scale: {cfg:g}",
            f"Seed: {seed}", f"Size: {width}x{height}"]
    if model:
        info.append(f"Model: {Path(model).stem}")
    lines.append(", ".join(info))
    return "\n".join(lines)


def save_png(image, path: str | Path, parameters: str) -> Path:
    """Save a PIL image with its generation parameters in the PNG text, atomically."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from ..config.toml_io import atomic_write_bytes

    info = PngInfo()
    info.add_text("parameters", parameters)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
