"""The captioner interface, the backend registry and what the backends share (model folders, device, memory).

A backend is one module in this package with one ``Captioner`` subclass decorated with ``@register``.
Backend modules import no ML library at import time (the GUI lists them at start-up): torch,
transformers, onnxruntime and open_clip are imported inside ``load()``.
"""
from __future__ import annotations

import gc
import importlib
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..hub import HUB_ID, snapshot

NOT_BACKENDS = {"base", "run", "cli"}


class CaptionError(ValueError):
    """Captioning cannot start or go on (model missing, bad folder...); the message says what to do."""


@dataclass(frozen=True)
class Option:
    """A backend setting: one ``--flag`` on the command line, one field in the GUI."""

    name: str  # python name; the flag is --name-with-dashes
    default: Any
    help: str
    label: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    gui: bool = True  # shown in the GUI (False: command line only)

    @property
    def kind(self) -> type:
        return type(self.default)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def max_length_option(default: int, maximum: int) -> Option:
    return Option("max_length", default, "Longest caption, in tokens.", "Max length", minimum=5, maximum=maximum)


BEAMS_OPTION = Option("num_beams", 3, "Beam search width: more is slower, often better.", "Beams", minimum=1,
                      maximum=10)


class Captioner:
    """One captioning model. ``load()`` once, ``caption(images)`` per batch, ``unload()`` at the end."""

    name: ClassVar[str] = ""  # the --backend value
    title: ClassVar[str] = ""  # shown in the GUI
    description: ClassVar[str] = ""  # one line: what its captions look like
    default_model: ClassVar[str] = ""  # hub repo id used when no model is given
    other_models: ClassVar[tuple[str, ...]] = ()  # other hub models the GUI offers
    model_help: ClassVar[str] = "Hugging Face repo id or a local model folder"
    options: ClassVar[tuple[Option, ...]] = ()
    batch_size: ClassVar[int] = 1
    needed_files: ClassVar[tuple[str, ...]] = ("config.json",)  # what a local folder must hold
    download_patterns: ClassVar[list[str] | None] = None  # allow_patterns for the hub download
    fallback_patterns: ClassVar[list[str] | None] = None  # a second download when the first lacks the weights
    held: ClassVar[tuple[str, ...]] = ("_model", "_processor")  # what unload() drops
    empty_hint: ClassVar[str] = ""  # what to try when the model writes nothing for an image

    def __init__(self, model: str = "", device: str = "auto", **options: Any):
        self.model = (model or "").strip() or self.default_model
        self.device_request = device or "auto"
        known = {o.name: o for o in self.options}
        unknown = set(options) - set(known)
        if unknown:
            raise CaptionError(f"{self.title}: unknown option(s) {', '.join(sorted(unknown))}")
        self.settings = {o.name: (o.default if options.get(o.name) is None else options[o.name])
                         for o in self.options}
        self.loaded = False
        for attr in self.held:
            setattr(self, attr, None)

    # -- what a backend implements
    def load(self, progress: Callable[[str], None] | None = None) -> None:
        raise NotImplementedError

    def caption(self, images: list[Any]) -> list[str]:
        """One caption per PIL RGB image."""
        raise NotImplementedError

    def unload(self) -> None:
        """Drop the model and give its memory back (GPU included)."""
        for attr in self.held:
            setattr(self, attr, None)
        self.loaded = False
        free_memory()

    # -- shared helpers
    @classmethod
    def looks_like(cls, folder: Path) -> bool:
        """Whether a local folder holds a model for this backend."""
        return all((folder / f).is_file() for f in cls.needed_files)

    def model_folder(self, model: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
        """The local folder of ``model`` (default: self.model): itself, or the hub download of a repo id."""
        model = model or self.model
        p = Path(model).expanduser()
        if p.is_dir():
            if not self.looks_like(p):
                raise CaptionError(
                    f"{p} is not a {self.title} model folder: it should hold {', '.join(self.needed_files)} "
                    "and the model's weights. "
                    f"Choose the folder you downloaded (for example with `hf download {self.default_model} "
                    f"--local-dir models/captioners/{self.default_model.split('/')[-1]}`).")
            return p
        if p.exists() or not HUB_ID.match(model):
            raise CaptionError(
                f"{self.title} model '{model}' not found: give a Hugging Face repo id (like "
                f"{self.default_model}) or the path of a downloaded model folder.")
        where = f"models/captioners/{model.split('/')[-1]}"
        advice = (f"Download it on a computer with internet: `hf download {model} --local-dir {where}` (in the "
                  f"LoRA Workshop folder), then choose that folder as the model.")
        folder = Path(snapshot(model, allow_patterns=self.download_patterns, progress=progress, error=CaptionError,
                               advice=advice))
        if not self.looks_like(folder) and self.fallback_patterns:
            folder = Path(snapshot(model, allow_patterns=self.fallback_patterns, progress=progress,
                                   error=CaptionError, advice=advice))
        if not self.looks_like(folder):
            missing = [f for f in self.needed_files if not (folder / f).is_file()] or ["its weights"]
            raise CaptionError(f"{model} does not look like a {self.title} model: it lacks {', '.join(missing)}.")
        return folder

    def torch_device(self):
        """(device, dtype): the GPU with fp16 when there is one, else the CPU with fp32."""
        import torch

        want = self.device_request
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise CaptionError("--device cuda was asked for, but PyTorch sees no CUDA GPU here. Use --device auto.")
        dtype = torch.float16 if want.startswith("cuda") else torch.float32
        return torch.device(want), dtype


class TransformersCaptioner(Captioner):
    """A backend whose model is a transformers model folder (config.json + weights) with its processor."""

    needed_files = ("config.json",)
    download_patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    fallback_patterns = ["*.json", "*.txt", "*.model", "*.bin"]

    @classmethod
    def looks_like(cls, folder: Path) -> bool:
        return super().looks_like(folder) and any(any(folder.glob(g)) for g in ("*.safetensors", "*.bin"))

    def load_pretrained(self, model_cls: Any, processor_cls: Any, progress: Callable[[str], None] | None = None,
                        folder: Path | None = None):
        """(model on the device in eval mode, processor) from self.model's folder."""
        folder = folder or self.model_folder(progress=progress)
        device, dtype = self.torch_device()
        if progress:
            progress(f"Loading {self.title} model {self.model} on {device}")
        try:
            processor = processor_cls.from_pretrained(folder, local_files_only=True)
            model = model_cls.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device).eval()
        except Exception as e:  # transformers raises many types; say which model and why
            raise transformers_error(self.model, e) from e
        self.device, self.dtype = device, dtype
        return model, processor


def free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def transformers_error(model: str, e: Exception) -> CaptionError:
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return CaptionError(f"Could not load {model}: {type(e).__name__}: {text}. If the download was interrupted, "
                        "download it again (delete its folder in the Hugging Face cache).")


# ----------------------------------------------------------------------------- registry
BACKENDS: dict[str, type[Captioner]] = {}


def register(cls: type[Captioner]) -> type[Captioner]:
    BACKENDS[cls.name] = cls
    return cls


def backends() -> dict[str, type[Captioner]]:
    """Every backend: each module of this package (but base/run/cli) that registers one."""
    package = sys.modules[__package__]
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in NOT_BACKENDS and not mod.name.startswith("_"):
            importlib.import_module(f"{__package__}.{mod.name}")
    return dict(sorted(BACKENDS.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))


ORDER = ["blip", "clip-interrogator", "wd14", "florence2"]


def get_backend(name: str) -> type[Captioner]:
    found = backends()
    if name not in found:
        raise CaptionError(f"Unknown captioning backend '{name}'. Choose one of: {', '.join(found)}.")
    return found[name]


def all_options() -> dict[str, tuple[Option, dict[str, Any]]]:
    """Every backend option by name, with the backends that have it and their default (CLI flags are shared)."""
    out: dict[str, tuple[Option, dict[str, Any]]] = {}
    for cls in backends().values():
        for o in cls.options:
            out.setdefault(o.name, (o, {}))[1][cls.title] = o.default
    return out


def transformers_names(*names: str) -> tuple:
    """transformers' classes by name. transformers imports its names lazily, and while another thread of the GUI
    is importing it too, a name can be missing for a moment ("cannot import name ... from 'transformers'"): that is
    asked again, a few times, before it counts as missing (an older transformers)."""
    import importlib
    import time

    for attempt in range(4):
        try:
            module = importlib.import_module("transformers")
            return tuple(getattr(module, n) for n in names)
        except (ImportError, AttributeError, RuntimeError) as e:  # RuntimeError: the lazy loader's own
            if attempt == 3:
                raise ImportError(str(e)) from e
            time.sleep(0.5)
    raise AssertionError("unreachable")
