"""The model files in the user's folders, recognised by their content (torch-free: safetensors headers only).

Each diffusers folder (model_index.json) is one model; each `.safetensors` / `.sft` file up to three folder levels
down is one of: a full checkpoint or a denoiser alone
(UNet / transformer: its family from core/models/detect.py), a text encoder (CLIP-L, CLIP-G, T5-XXL, Qwen3 4B / 8B),
an autoencoder (SD's 4 channels, Flux.1's 16, FLUX.2's with BatchNorm statistics), a LoRA, or something else.
A file's header is read once while its size and time stay the same (the GUI lists the folders often). Names do not decide; they
only order equal candidates (a part's `prefer` pattern). Nothing is copied, moved or written. A folder that is gone
(an unplugged drive) or a file that cannot be read is reported in `notes`, never raised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import lru_cache
from pathlib import Path

from .. import families
from .detect import ModelFileError, detect_single_file_family, read_safetensors_header

SUFFIXES = (".safetensors", ".sft")
MAX_DEPTH = 3
# the part a file can fill: the "kind" of core/families' Part
QWEN3_SIZES = {2560: "4B", 4096: "8B"}
VAE_CHANNELS = {4: "vae-sd", 16: "vae-flux"}


@dataclass(frozen=True)
class ModelFile:
    path: str
    role: str  # checkpoint, denoiser, text_encoder, vae, lora, other
    family: str | None = None  # checkpoint / denoiser: the family (also one this program does not train)
    kind: str = ""  # text_encoder / vae: clip-l, clip-g, t5xxl, qwen3, vae-sd, vae-flux, vae-flux2
    words: str = ""  # what it is, in words
    needs: tuple[str, ...] = ()  # a denoiser alone: the settings of the parts it needs (core/families Part)
    width: int | None = None  # a text encoder's hidden width; a transformer's text input width


@dataclass
class Library:
    files: list[ModelFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # folders not found, files not readable

    def parts_for(self, model: ModelFile | str, config_family: str | None = None) -> dict[str, list[str]]:
        """For a denoiser-only file: each part it needs -> the files that can fill it (best first). `config_family`:
        the family of the config folder given for an unusual architecture (base_config_dir)."""
        if isinstance(model, str):
            known = None if config_family else next((f for f in self.files if f.path == model), None)
            model = known or classify(model, config_family)
        spec = families.find(model.family)
        if spec is None:
            return {}
        out: dict[str, list[str]] = {}
        for part in spec.parts:
            if part.setting not in model.needs:
                continue
            fits = [f for f in self.files if f.kind == part.kind]
            if part.text_stack and model.width:  # the encoder whose (stacked) output the transformer takes
                fits = [f for f in fits if not f.width or f.width * part.text_stack == model.width]
            fits.sort(key=lambda f: (not (part.prefer and fnmatch(Path(f.path).name.lower(), part.prefer)), f.path))
            out[part.setting] = [f.path for f in fits]
        return out

    def best_parts(self, model: ModelFile | str, config_family: str | None = None) -> dict[str, str]:
        """The first candidate of each part (what the form fills in)."""
        return {k: v[0] for k, v in self.parts_for(model, config_family).items() if v}

    def by_family(self) -> dict[str, list[ModelFile]]:
        """The base models (checkpoints and denoisers) of each family this program trains, in family order."""
        out: dict[str, list[ModelFile]] = {name: [] for name in families.names()}
        for f in self.files:
            if f.role in ("checkpoint", "denoiser") and f.family in out:
                out[f.family].append(f)
        return {k: v for k, v in out.items() if v}


def _norm_width(shapes: dict, *names: str) -> int | None:
    for n in names:
        if n in shapes and len(shapes[n]) == 1:
            return int(shapes[n][0])
    return None


def _bare(key: str) -> str:
    for prefix in ("transformer.text_model.", "text_model.", "transformer.", "model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _text_encoder(shapes: dict) -> tuple[str, str, int | None] | None:
    keys = list(shapes)
    bare = {_bare(k): v for k, v in shapes.items()}
    if any(".self_attn.q_norm." in k for k in keys) and any("layers." in k for k in keys):
        width = _norm_width(shapes, "model.norm.weight", "norm.weight")
        return "qwen3", f"Qwen3 text encoder ({QWEN3_SIZES.get(width or 0, f'width {width}')})", width
    if any(k.startswith("encoder.block.") for k in keys) and ("shared.weight" in keys or
                                                               "encoder.embed_tokens.weight" in keys):
        shared = shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight")
        return "t5xxl", "T5-XXL text encoder", int(shared[-1])
    width = _norm_width(bare, "final_layer_norm.weight")
    if width and any("encoder.layers." in k for k in bare):
        kind = "clip-g" if width == 1280 else "clip-l"
        return kind, f"{kind.upper()} text encoder", width
    return None


def _vae(shapes: dict) -> tuple[str, str] | None:
    stripped = {k.removeprefix("first_stage_model.").removeprefix("vae."): v for k, v in shapes.items()}
    if not stripped or not all(k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "bn."))
                               for k in stripped):
        return None
    conv = stripped.get("decoder.conv_in.weight")
    if conv is None or len(conv) != 4:
        return None
    kind = "vae-flux2" if "bn.running_mean" in stripped else VAE_CHANNELS.get(int(conv[1]))  # FLUX.2: BatchNorm
    words = {"vae-sd": "SD autoencoder (VAE)", "vae-flux": "Flux.1 autoencoder (ae)",
             "vae-flux2": "FLUX.2 autoencoder"}
    return (kind, words[kind]) if kind else None


def classify(path: str | Path, config_family: str | None = None) -> ModelFile:
    """What one file is, from its header (`config_family`: as detect.detect_single_file_family)."""
    st = os.stat(path)
    return _classify(str(path), st.st_size, st.st_mtime_ns, config_family)


@lru_cache(maxsize=4096)
def _classify(p: str, size: int, mtime_ns: int, config_family: str | None) -> ModelFile:
    """classify, keyed by the file's size and time: a changed file is read again."""
    shapes, meta = read_safetensors_header(p)
    te = _text_encoder(shapes)
    if te:
        return ModelFile(p, "text_encoder", kind=te[0], words=te[1], width=te[2])
    vae = _vae(shapes)
    if vae:
        return ModelFile(p, "vae", kind=vae[0], words=vae[1])
    try:
        res = detect_single_file_family(shapes, meta, Path(p).name, config_family)
    except ModelFileError as e:
        text = str(e)
        role = "lora" if " is a LoRA" in text else "other"
        return ModelFile(p, role, words="LoRA" if role == "lora" else text.split(". ")[0])
    spec = families.find(res.family)
    needs = tuple(part.setting for part in spec.parts if part.role not in res.components) if spec else ()
    role = "denoiser" if needs or (spec is None and not {"vae", "text_encoder"} & set(res.components)) \
        else "checkpoint"
    title = families.title(res.family)
    text_in = shapes.get("txt_in.weight") or shapes.get("model.diffusion_model.txt_in.weight")
    return ModelFile(p, role, family=res.family, words=f"{title} {'checkpoint' if role == 'checkpoint' else 'denoiser'}"
                     + (f" (needs {', '.join(needs)})" if needs else ""), needs=needs,
                     width=int(text_in[-1]) if text_in else None)


def classify_folder(path: Path) -> ModelFile:
    """A diffusers folder: a complete model of its family."""
    from .detect import detect_diffusers_folder

    family = detect_diffusers_folder(path)
    return ModelFile(str(path), "checkpoint", family=family, words=f"{families.title(family)} diffusers folder")


def usual_folders(home: str | Path | None = None) -> list[str]:
    """The models folders of ComfyUI, AUTOMATIC1111 and Forge at the places their installers use, that exist on this
    computer (a fixed list of places is looked at; no disk is searched)."""
    home = Path(home or Path.home())
    roots = [home, home / "Desktop", home / "Documents", home / "Downloads", home / "AI", Path("C:/"), Path("D:/")]
    apps = ["ComfyUI", "ComfyUI_windows_portable/ComfyUI", "stable-diffusion-webui", "stable-diffusion-webui-forge",
            "webui_forge_cu121_torch231/webui", "sd.webui/webui", "StabilityMatrix/Data"]
    found = []
    for root in roots:
        for app in apps:
            folder = root / app / "models"
            try:
                if folder.is_dir() and str(folder) not in found:
                    found.append(str(folder))
            except OSError:
                continue
    return found


def _walk(folder: Path, notes: list[str]):
    seen: set[tuple[int, int]] = set()
    stack = [(folder, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:  # a link back up: looked at once
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            notes.append(f"{d}: cannot be read ({e.strerror or e}); skipped")
            continue
        for e in entries:
            try:
                if e.is_dir() and (Path(e.path) / "model_index.json").is_file():
                    yield Path(e.path)  # a diffusers folder: one model, its files are not parts to pick
                elif e.is_dir() and depth + 1 <= MAX_DEPTH and not e.name.startswith("."):
                    stack.append((Path(e.path), depth + 1))
                elif e.is_file() and e.name.lower().endswith(SUFFIXES):
                    yield Path(e.path)
                elif e.is_symlink() and not os.path.exists(e.path):
                    notes.append(f"{e.path}: a link to a file that is not there (a moved file or an unplugged "
                                 "drive?); skipped")
            except OSError:
                notes.append(f"{e.path}: cannot be read; skipped")


def scan(folders: list[str | Path]) -> Library:
    """Every model file in `folders` (each up to three levels down), classified."""
    lib = Library()
    done: set[str] = set()
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            lib.notes.append(f"{root}: folder not found (an unplugged drive or a moved folder?); skipped")
            continue
        for path in _walk(root, lib.notes):
            real = os.path.realpath(path)
            if real in done:
                continue
            done.add(real)
            try:
                lib.files.append(classify_folder(path) if path.is_dir() else classify(path))
            except (ModelFileError, OSError) as e:
                lib.notes.append(f"{path}: {str(e).split('. ')[0]}; skipped")
    return lib
