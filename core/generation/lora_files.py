"""LoRA files for generation: listing them with what their metadata says (model family, rank, trigger
words), A1111 ``<lora:name:weight>`` prompt tags, and finding a LoRA by name in the LoRA folders.

Reads only safetensors headers (no torch), so listing a folder of LoRAs is cheap.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .. import families

LORA_EXTS = (".safetensors",)
# <lora:name>, <lora:name:0.8>, <lora:name:0.8:te=..> (extra fields ignored, as A1111's unet/te split is not supported)
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
_ADAPTER_MARKS = ("lora_down", "lora_up", "lora_a.", "lora_b.", "lora.down", "lora.up", "hada_w1", "lokr_w1")
_SKIP_DIRS = {"state", "samples", "control", "__pycache__", "generated"}


class GenerateError(ValueError):
    """A problem with what was asked (unknown LoRA, wrong family, bad tag...); the message says what to do."""



@dataclass
class LoraInfo:
    """A LoRA file and what its header says (read without loading any tensor)."""

    path: str
    name: str  # file stem: what <lora:name:..> matches
    mtime: float
    size: int
    output_name: str = ""  # ss_output_name
    epoch: int | None = None  # ss_epoch
    steps: int | None = None  # ss_steps
    base_version: str = ""  # ss_base_model_version
    family: str | None = None  # sd15 / sd2 / sdxl / flux ... when the header says
    trigger: str = ""  # modelspec.trigger_phrase
    dora: bool = False  # a DoRA file (dora_scale tensors): the loaders apply it differently
    lycoris: str = ""  # "LoHa" / "LoKr": LyCORIS tensors, which diffusers does not load for SD / SDXL / Flux.1
    warning: str = ""  # e.g. made for another family than the loaded base model
    val_loss: float | None = None  # ss_validation_loss: the run's validation loss when it was saved
    best: bool = False  # the lowest validation loss of its run's files (set by list_loras / mark_best)

    @property
    def label(self) -> str:
        """One line for a picker: name, epoch, family, folder."""
        bits = ["★ best"] if self.best else []
        if self.epoch is not None:
            bits.append(f"epoch {self.epoch}")
        if self.steps is not None:
            bits.append(f"step {self.steps}")
        if self.val_loss is not None:
            bits.append(f"validation {self.val_loss:.4f}")
        if self.family:
            bits.append(families.title(self.family))
        bits.append(f"{Path(self.path).parent.name}/")
        return f"{self.name} — " + " · ".join(bits) + ("  ⚠ other model family" if self.warning else "")


_INFO_CACHE: dict[str, tuple[tuple[float, int], LoraInfo | None]] = {}


def read_lora_info(path: str | os.PathLike) -> LoraInfo | None:
    """Header metadata of one file, or None when it is not a LoRA (a base model, a VAE, unreadable...)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = str(p.resolve())
    stamp = (st.st_mtime, st.st_size)
    hit = _INFO_CACHE.get(key)
    if hit and hit[0] == stamp:
        return _copy(hit[1])
    info = _read_header(p, st)
    _INFO_CACHE[key] = (stamp, info)
    return _copy(info)


def _copy(info: LoraInfo | None) -> LoraInfo | None:
    return None if info is None else LoraInfo(**info.__dict__)


def _read_header(p: Path, st: os.stat_result) -> LoraInfo | None:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="np") as f:  # reads the JSON header only
            meta = f.metadata() or {}
            keys = list(f.keys())
    except Exception:
        return None
    if not any(m in k.lower() for k in keys[:2000] for m in _ADAPTER_MARKS):
        return None
    def number(key: str) -> int | None:
        try:
            return int(float(meta[key])) if meta.get(key) not in (None, "", "None") else None
        except (TypeError, ValueError):
            return None

    try:
        val_loss = float(meta["ss_validation_loss"]) if meta.get("ss_validation_loss") else None
    except ValueError:
        val_loss = None
    version = meta.get("ss_base_model_version", "")
    family = families.of_version(version) or families.of_architecture(meta.get("modelspec.architecture", ""))
    if family is None:  # untagged files: SDXL LoRAs have two text encoders or sgm unet names
        low = " ".join(keys[:2000])
        if "lora_te1_" in low or "lora_te2_" in low or "input_blocks_" in low:
            family = "sdxl"
    return LoraInfo(path=str(p), name=p.stem, mtime=st.st_mtime, size=st.st_size,
                    output_name=meta.get("ss_output_name", ""), epoch=number("ss_epoch"),
                    steps=number("ss_steps"), base_version=version,
                    family=family, trigger=meta.get("modelspec.trigger_phrase", ""),
                    dora=any(k.endswith(".dora_scale") for k in keys) or "dora_wd" in meta.get("ss_network_args", ""),
                    lycoris=next((t for m, t in ((".hada_w1", "LoHa"), (".lokr_w", "LoKr"))
                                  if any(m in k for k in keys[:2000])), ""), val_loss=val_loss)


def _walk(folder: Path, depth: int) -> Iterable[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            if e.is_file() and e.name.lower().endswith(LORA_EXTS):
                yield Path(e.path)
            elif e.is_dir() and depth > 0 and e.name.lower() not in _SKIP_DIRS:
                yield from _walk(Path(e.path), depth - 1)
        except OSError:
            continue


def list_loras(folders: Iterable[str | os.PathLike], base_family: str | None = None,
               max_depth: int = 3) -> list[LoraInfo]:
    """Every LoRA ``.safetensors`` in the folders (and subfolders, except training state), newest first.

    ``base_family`` (``sd15``/``sdxl``/...): LoRAs whose header names another family get a ``warning``.
    """
    seen: set[str] = set()
    found: list[LoraInfo] = []
    for folder in folders:
        if not folder or not str(folder).strip():
            continue
        root = Path(folder).expanduser()
        if not root.is_dir():
            continue
        for path in _walk(root, max_depth):
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            info = read_lora_info(path)
            if info is None:
                continue
            info.warning = family_warning(info, base_family)
            found.append(info)
    return mark_best(found)


def run_of(info: LoraInfo) -> tuple[str, str]:
    """The run a file belongs to: its folder and output name (the epochs of one run share both)."""
    return str(Path(info.path).parent), info.output_name or info.name


def mark_best(infos: list[LoraInfo]) -> list[LoraInfo]:
    """Mark each run's file with the lowest validation loss as best (when two or more of its files have one) and
    order the list: runs newest first, each run's best file first, then its other files newest first."""
    runs: dict[tuple[str, str], list[LoraInfo]] = {}
    for info in sorted(infos, key=lambda i: i.mtime, reverse=True):
        runs.setdefault(run_of(info), []).append(info)
    out: list[LoraInfo] = []
    for files in runs.values():
        scored = [i for i in files if i.val_loss is not None]
        if len(scored) >= 2:
            best = min(scored, key=lambda i: (i.val_loss, i.steps or 0))
            best.best = True
            files = [best] + [i for i in files if i is not best]
        out += files
    return out


def grid_row_labels(files: Sequence[str]) -> list[tuple[str, str]]:
    """(title, detail) of each row of the epoch x strength grid: the file, its epoch and step, and on the row of
    the file with the lowest validation loss among them, that it is the best."""
    infos = [read_lora_info(f) for f in files]
    best = {i.path for i in mark_best([i for i in infos if i]) if i.best}
    rows = []
    for f, info in zip(files, infos):
        sub = " · ".join(([f"epoch {info.epoch}"] if info.epoch is not None else [])
                         + ([f"step {info.steps}"] if info.steps is not None else [])
                         + (["BEST: lowest validation loss"] if info.path in best else [])) if info else ""
        rows.append((Path(f).stem, sub))
    return rows


DORA_NOTE = ("a DoRA file: the Generate tab (diffusers) applies it as a plain LoRA, without its DoRA magnitude; "
             "ComfyUI and Forge apply it approximately (about 8-10% off per layer), AUTOMATIC1111 wrongly. Only "
             "loaders that use DoRA's own formula reproduce what was trained (docs/architecture.md, DoRA files).")


def family_warning(info: LoraInfo, base_family: str | None) -> str:
    if not base_family or not info.family or info.family == base_family:
        return ""
    lora = families.title(info.family)
    base = families.title(base_family)
    return (f"{info.name} was trained for {lora} but the base model is {base}: it cannot be used with it. "
            f"Choose a {lora} base model, or a LoRA made for {base}.")


# --------------------------------------------------------------------------- <lora:name:0.8> tags
def parse_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Cut ``<lora:name:strength>`` tags out of a prompt: (prompt without them, [(name, strength)])."""
    tags: list[tuple[str, float]] = []

    def take(m: re.Match) -> str:
        name, value = m.group(1).strip(), (m.group(2) or "").strip()
        if not name:
            raise GenerateError(f"{m.group(0)}: the LoRA name is missing. Write it as <lora:name:0.8>.")
        try:
            strength = float(value) if value else 1.0
        except ValueError:
            raise GenerateError(f"{m.group(0)}: the strength '{value}' is not a number. "
                                f"Write it as <lora:{name}:0.8>.") from None
        tags.append((name, strength))
        return " "

    text = LORA_TAG.sub(take, prompt or "")
    # tidy what the tags leave behind: doubled commas and spaces
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\s+,", ",", text)
    return text.strip().strip(",").strip(), tags


def resolve_lora_name(name: str, folders: Sequence[str | os.PathLike]) -> str:
    """Path of the LoRA a tag names: an existing file path, or a file stem in the folders (any case)."""
    p = Path(name).expanduser()
    if p.suffix.lower() in LORA_EXTS and p.is_file():
        return str(p)
    want = name.lower().removesuffix(".safetensors")
    available = list_loras(folders)
    for info in available:
        if info.name.lower() == want:
            return info.path
    searched = [str(Path(f).expanduser()) for f in folders if f and str(f).strip()]
    where = ", ".join(searched) if searched else "(no LoRA folder is set)"
    names = sorted({i.name for i in available})
    hint = f" Available: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}." if names else \
        " No LoRA files were found there."
    raise GenerateError(f"<lora:{name}>: no LoRA file named '{want}.safetensors' in {where}.{hint}")


def merge_loras(explicit: Iterable[tuple[str, float]], tags: Iterable[tuple[str, float]],
                folders: Sequence[str | os.PathLike]) -> list[tuple[str, float]]:
    """Explicit (path, strength) choices plus prompt tags (resolved by name); a tag wins for the same file."""
    merged: dict[str, tuple[str, float]] = {}
    for path, strength in explicit:
        if not path:
            continue
        if not Path(path).expanduser().is_file():
            raise GenerateError(f"LoRA file not found: {path}. Refresh the list, or check the path.")
        merged[str(Path(path).expanduser().resolve())] = (str(Path(path).expanduser()), float(strength))
    for name, strength in tags:
        path = resolve_lora_name(name, folders)
        merged[str(Path(path).resolve())] = (path, float(strength))
    return list(merged.values())
