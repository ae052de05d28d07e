"""What the Generate tab offers: its folders from the settings, the base models and LoRAs found there, the base
model's family and image size, notes about the chosen LoRAs. No gradio, no torch (file headers and configs only).
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from core import families

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_EXTS = (".safetensors", ".ckpt")


def setting(settings: Any, *names: str) -> str:
    for n in names:
        v = settings.get(n) if isinstance(settings, dict) else getattr(settings, n, None)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def _output_dir(settings: Any) -> str:
    return setting(settings, "output_dir", "outputs_dir")


def generated_dir(settings: Any) -> Path:
    base = _output_dir(settings) or str(PROJECT_ROOT / "outputs")
    return Path(base).expanduser().resolve() / "generated"


def lora_dirs(settings: Any, ctx: Any = None) -> list[str]:
    dirs: list[str] = []
    more = ctx.output_dirs() if ctx is not None and hasattr(ctx, "output_dirs") else []
    for d in [_output_dir(settings), setting(settings, "loras_dir"), *more]:
        if d:
            p = str(Path(d).expanduser().resolve())
            if p not in dirs:
                dirs.append(p)
    return dirs


def model_label(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return f"{p.name} (diffusers folder)"
    return p.name if p.is_file() else path


def model_choices(models_dir: str) -> list[str]:
    """Diffusers folders and single-file checkpoints in the models folder (and one level of sub-folders)."""
    root = Path(models_dir).expanduser() if models_dir else None
    if root is None or not root.is_dir():
        return []
    found: list[str] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in MODEL_EXTS:
            found.append(str(p))
        elif p.is_dir():
            if (p / "model_index.json").is_file():
                found.append(str(p))
            else:
                try:
                    found += [str(q) for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in MODEL_EXTS]
                except OSError:
                    pass
    return found


def newest_run_base_model(output_dirs: list[str]) -> str:
    """The base model of the most recently started training run in these folders ('' when none)."""
    best: tuple[float, Path] | None = None
    for out in output_dirs:
        try:
            children = list(Path(out).iterdir())
        except OSError:
            continue
        for child in children:
            cfg = child / "config.toml"
            try:
                t = cfg.stat().st_mtime
            except OSError:
                continue
            if best is None or t > best[0]:
                best = (t, cfg)
    if best is None:
        return ""
    try:
        return str(tomllib.loads(best[1].read_text(encoding="utf-8")).get("pretrained_model_name_or_path", ""))
    except (OSError, ValueError):
        return ""


def native_size(model: str) -> int | None:
    """The base model's own image size: from a diffusers folder's configs, else by family (None when unknown)."""
    from core.models.detect import native_image_size

    p = Path(model).expanduser() if model else None
    size = native_image_size(p) if p is not None and p.is_dir() else None
    if size:
        SIZES_SEEN.add(size)
    spec = families.find(base_family(model))
    return size or (spec.native_resolution if spec else None)


SIZES_SEEN = {f.native_resolution for f in families.all_families()}  # sizes that were a model's own: changed along with the model


def base_family(model: str) -> str | None:
    """sd15 / sd2 / sdxl ... of a local base model, from its config or header only (None when unknown)."""
    if not model:
        return None
    from core.models import detect

    p = Path(model).expanduser()
    try:
        if p.is_dir():
            return detect.detect_diffusers_folder(p)
        if p.is_file():
            return detect.inspect_model_file(p).family
    except Exception:
        return None
    return None


# --------------------------------------------------------------------------- LoRA choices
def lora_choices(settings: Any, ctx: Any, family: str | None) -> tuple[list[tuple[str, str]], list[Any]]:
    from core.generation.lora_files import list_loras

    infos = list_loras(lora_dirs(settings, ctx), family)
    return [(i.label, i.path) for i in infos], infos


def lora_notes(paths: list[str], family: str | None) -> str:
    """Markdown under the LoRA pickers: trigger words to put in the prompt, family warnings."""
    from core.generation.lora_files import family_warning, read_lora_info

    lines = []
    for path in paths:
        if not path:
            continue
        info = read_lora_info(path)
        if info is None:
            if Path(path).expanduser().is_file():
                lines.append(f"⚠ `{Path(path).name}` is not a LoRA file.")
            else:
                lines.append(f"⚠ `{path}` not found.")
            continue
        bits = [f"**{info.name}**"]
        if info.epoch is not None:
            bits.append(f"epoch {info.epoch}")
        if info.steps is not None:
            bits.append(f"step {info.steps}")
        if info.trigger:
            bits.append(f"trigger word: `{info.trigger}` (put it in the prompt)")
        line = " · ".join(bits)
        warn = family_warning(info, family)
        if warn:
            line += f"  \n⚠ {warn}"
        if info.dora:
            from core.generation.lora_files import DORA_NOTE

            line += f"  \n⚠ {DORA_NOTE[0].upper()}{DORA_NOTE[1:]}"
        lines.append(line)
    return "\n\n".join(lines)


# --------------------------------------------------------------------------- the generator
