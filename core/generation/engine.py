"""Generate images with a base model and LoRAs: the engine behind the GUI's Generate tab.

One :class:`Generator` keeps one diffusers pipeline loaded (keyed by base model + VAE) and puts
LoRAs on and off it without reloading the base: each LoRA file is loaded once as a named peft
adapter (``pipe.load_lora_weights(path, adapter_name=...)``); every generation then only picks
the active adapters and their strengths (``pipe.set_adapters``) or turns them all off
(``pipe.disable_lora``). Strength 0 means "not applied", so it gives exactly the base model's image.

Prompts may carry AUTOMATIC1111 tags, ``<lora:name:0.8>``: they are cut out of the prompt text,
``name`` is looked up (file stem, case-insensitive) in the LoRA folders given, and they are merged
with the LoRAs chosen explicitly (a tag wins over an explicit choice of the same file).

Images are saved as PNGs carrying A1111-style ``parameters`` text (with the ``<lora:..>`` tags).
No gradio here; torch and diffusers are imported only when a model is loaded, so listing LoRAs
is cheap.
"""
from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
import random
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from .grid_image import draw_grid
from .lora_files import GenerateError, family_warning, grid_row_labels, merge_loras, parse_lora_tags, read_lora_info
from .samplers import SAMPLERS, a1111_parameters, save_png

Progress = Callable[[float, str], None]
MAX_SEED = 2**32 - 1


# --------------------------------------------------------------------------- the generator
class Result(tuple):
    """One generated image: unpacks as ``(image, parameters)``; ``.path`` is the saved PNG (or None)."""

    def __new__(cls, image, parameters: str, path: str | None = None, seed: int = 0):
        self = super().__new__(cls, (image, parameters))
        self.path = path
        self.seed = seed
        return self

    @property
    def image(self):
        return self[0]

    @property
    def parameters(self) -> str:
        return self[1]


class GridResult(NamedTuple):
    image: Any  # PIL image: the labelled grid
    cells: list[list[Any]]  # cells[row][column] PIL images
    path: str | None  # the saved grid PNG
    parameters: str


def pick_device():
    """(device, dtype): CUDA in fp16 when there is a GPU, else the CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


class _LogCatcher(logging.Handler):
    """Collects diffusers/peft warnings while a LoRA loads (keys that did not match, for example)."""

    NAMES = ("diffusers", "peft")

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        for n in self.NAMES:
            logging.getLogger(n).addHandler(self)
        # transformers prints a spurious "LOAD REPORT ... MISSING" table when peft adds an adapter to a text
        # encoder (the weights are set right after); peft warns that the model already holds adapters (intended)
        self._tf = logging.getLogger("transformers")
        self._tf_level = self._tf.level
        self._tf.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute.*")
        return self

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._tf.setLevel(self._tf_level)
        for n in self.NAMES:
            logging.getLogger(n).removeHandler(self)


class Generator:
    """Keeps one base pipeline loaded and applies LoRAs to it per generation (thread-safe: one at a time)."""

    def __init__(self, outputs_dir: str | os.PathLike = "outputs/generated", lora_dirs: Sequence[str] = (),
                 *, model: str = "", vae: str = "", device=None, dtype=None):
        self.outputs_dir = Path(outputs_dir).expanduser()
        self.lora_dirs = [str(d) for d in lora_dirs if d]
        self.default_model = model
        self.default_vae = vae
        self._device, self._dtype = device, dtype
        # settings for loading: the separate files a denoiser-only file needs (a Flux transformer: clip_l, t5xxl, ae)
        # the part files a transformer-only base needs (clip_l, t5xxl, ae / qwen3, ae): model path -> {setting: file}
        self.find_parts: Callable[[str], dict[str, str]] = lambda model: {}
        self.pipe = None
        self.family = None  # ModelFamily of the loaded base
        self.model_key: tuple[str, str] | None = None
        self.model = ""
        self._scheduler_config: dict = {}
        self._adapters: dict[str, tuple[str, tuple[float, int]]] = {}  # resolved path -> (adapter name, stamp)
        self._counter = 0
        self.warnings: list[str] = []  # warnings of the last call (LoRA keys that did not load, ...)
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ base model
    @property
    def device(self):
        if self._device is None:
            self._device, self._dtype = pick_device()
        return self._device

    @property
    def dtype(self):
        _ = self.device
        return self._dtype

    def load(self, model: str, vae: str = "", progress: Progress | None = None):
        """Load the base model (or keep the one loaded when it is the same); return the pipeline."""
        from ..ml_lock import ML_IMPORT_LOCK

        with ML_IMPORT_LOCK:  # the GUI's LoRA fit check may import the same libraries in another thread
            return self._load(model, vae, progress)

    def _load(self, model: str, vae: str, progress: Progress | None):
        from ..models.loading import load_pipeline

        model = (model or "").strip()
        vae = (vae or "").strip()
        if not model:
            raise GenerateError("No base model chosen: pick one in the list or type a path / Hugging Face repo id.")
        p = Path(model).expanduser()
        parts = self.find_parts(model) if p.is_file() else {}
        key = (str(p.resolve()) if p.exists() else model, str(Path(vae).expanduser().resolve()) if vae else "",
               json.dumps(parts, sort_keys=True))
        with self.lock:
            if self.pipe is not None and self.model_key == key:
                return self.pipe
            self.unload()
            if progress:
                progress(0.0, f"Loading the base model {Path(model).name}")
            import torch

            pipe, fam = load_pipeline(model, vae=vae, dtype=self.dtype, settings=dict(parts),
                                      large_model_dtype=torch.bfloat16 if self.device.type == "cuda" else self.dtype,
                                      progress=(lambda msg: progress(0.0, msg)) if progress else None)
            self._prepare(pipe, fam)
            self.pipe, self.family, self.model_key, self.model = pipe, fam, key, model
            self._scheduler_config = dict(pipe.scheduler.config)
            return pipe

    def _prepare(self, pipe, fam) -> None:
        import torch

        if fam.load_in_compute_dtype and self.device.type == "cuda" and \
                torch.cuda.get_device_properties(self.device).total_memory < 40 * 2**30:
            pipe.enable_model_cpu_offload()  # Flux: each part on the GPU only while it runs
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None
        if fam.vae_needs_fp32 and self.dtype != torch.float32:
            # the SDXL VAE overflows in fp16: keep it fp32 and hand it fp32 latents
            pipe.vae.to(dtype=torch.float32)
            first = pipe.vae.post_quant_conv if getattr(pipe.vae, "post_quant_conv", None) is not None \
                else pipe.vae.decoder
            first.register_forward_pre_hook(
                lambda _m, args: tuple(a.float() if torch.is_tensor(a) else a for a in args))

    def unload(self) -> None:
        """Drop the loaded pipeline (and its LoRAs) and give the memory back."""
        with self.lock:
            had = self.pipe is not None
            self.pipe = self.family = self.model_key = None
            self.model = ""
            self._adapters.clear()
            if had:
                gc.collect()
                try:
                    import torch

                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                except Exception:
                    pass

    # ------------------------------------------------------------------ LoRAs
    def loaded_adapters(self) -> dict[str, str]:
        """{LoRA path: adapter name} of the files loaded on the current pipeline."""
        return {path: name for path, (name, _stamp) in self._adapters.items()}

    def _adapter_for(self, path: str, progress: Progress | None = None) -> str:
        p = Path(path).expanduser()
        try:
            st = p.stat()
        except OSError:
            raise GenerateError(f"LoRA file not found: {p}") from None
        key, stamp = str(p.resolve()), (st.st_mtime, st.st_size)
        known = self._adapters.get(key)
        if known and known[1] == stamp:
            return known[0]
        if known:  # the file was rewritten (a new training with the same name): load it again
            self._delete_adapter(known[0])
            del self._adapters[key]
        info = read_lora_info(p)
        if info is None:
            raise GenerateError(f"{p.name} is not a LoRA file (no LoRA weights in it, or it is damaged).")
        warn = family_warning(info, self.family.name)
        if warn:
            raise GenerateError(warn)
        if info.lycoris:
            raise GenerateError(f"{p.name} is a LyCORIS {info.lycoris} file: diffusers, which the Generate tab uses, "
                                "cannot load LoHa / LoKr for this model family. Use it in ComfyUI, AUTOMATIC1111 or "
                                "Forge (the training samples show what it does).")
        self._counter += 1
        name = f"lw{self._counter}_" + re.sub(r"[^0-9A-Za-z_]", "_", p.stem)[:48]
        if progress:
            progress(0.0, f"Loading LoRA {p.name}")
        with _LogCatcher() as logs:
            try:
                self.pipe.load_lora_weights(str(p), adapter_name=name)
            except Exception as e:
                self._delete_adapter(name)
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                raise GenerateError(f"Could not load the LoRA {p.name} onto {self.family.title}: "
                                    f"{type(e).__name__}: {first}") from e
        problems = [m for m in logs.messages
                    if any(w in m.lower() for w in ("unexpected", "missing", "not loaded", "were not used"))]
        self.warnings += [f"{p.name}: {m.splitlines()[0][:300]}" for m in problems]
        self._adapters[key] = (name, stamp)
        return name

    def _delete_adapter(self, name: str) -> None:
        with warnings.catch_warnings():  # peft notes which adapter becomes active instead: set_adapters decides
            warnings.simplefilter("ignore")
            try:
                self.pipe.delete_adapters(name)
            except Exception:
                pass

    def apply_loras(self, loras: Sequence[tuple[str, float]],
                    progress: Progress | None = None) -> list[tuple[str, float]]:
        """Make exactly these (path, strength) LoRAs active; strength 0 leaves a LoRA off. Returns the active ones."""
        active = [(path, float(s)) for path, s in loras if path and float(s) != 0.0]
        names = [self._adapter_for(path, progress) for path, _ in active]
        if not names:
            if self._adapters:
                self.pipe.disable_lora()
        else:
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=[s for _, s in active])
        return active

    # ------------------------------------------------------------------ generation
    def _prepare_call(self, prompt, loras, model, vae, progress):
        self.warnings = []
        model = model if model is not None else self.default_model
        vae = vae if vae is not None else self.default_vae
        clean, tags = parse_lora_tags(prompt)  # tag mistakes first: no need to wait for the model to load
        merged = merge_loras(loras or [], tags, self.lora_dirs)
        if model or self.pipe is None:
            self.load(model or "", vae or "", progress)
        return clean, merged

    def _render(self, prompt, negative, seed, steps, guidance, width, height, clip_skip, on_step=None):
        import torch

        kwargs = self.family.generate_kwargs(self.pipe, negative, float(guidance), int(clip_skip))
        if on_step is not None:
            def callback(_pipe, i, _t, cb_kwargs):
                on_step(i + 1)
                return cb_kwargs
            kwargs["callback_on_step_end"] = callback
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        out = self.pipe(prompt=prompt, width=width, height=height,
                        num_inference_steps=int(steps), generator=gen, output_type="pil", **kwargs)
        return out.images[0]

    def _set_sampler(self, sampler: str) -> None:
        if sampler not in SAMPLERS:
            raise GenerateError(f"Unknown sampler '{sampler}'. Choose one of: {', '.join(SAMPLERS)}.")
        self.pipe.scheduler = self.family.sample_scheduler(sampler, self._scheduler_config)

    def _params(self, clean, negative, steps, sampler, guidance, seed, w, h, clip_skip, loras) -> str:
        way = self.family.spec.sampling_for(self.model)  # the loaded model's variant (klein distilled: no CFG)
        sampler = sampler if way.samplers else "euler"  # flow-matching models sample with their own Euler
        if not way.negative_prompt:  # Flux: one sampler, distilled guidance (or none), no negative prompt
            params = a1111_parameters(clean, "", steps, sampler, float(guidance), seed, w, h, model=self.model,
                                      loras=loras)
            return params.replace("CFG scale:", "Distilled CFG Scale:", 1)
        params = a1111_parameters(clean, negative, steps, sampler, float(guidance), seed, w, h, model=self.model,
                                  loras=loras)
        if self.family.pipeline_kwargs(int(clip_skip)):  # SDXL always uses the penultimate layer
            params += f", Clip skip: {int(clip_skip)}"
        return params

    def _size(self, width, height) -> tuple[int, int]:
        m = self.family.size_multiple if self.family is not None else 8
        w, h = int(width) // m * m, int(height) // m * m
        if w < m or h < m:
            raise GenerateError(f"Image size {width}x{height} is too small (at least {m}x{m}; 512x512 for SD 1.5, "
                                "1024x1024 for SDXL and Flux).")
        return w, h

    def _next_path(self, seed: int, prefix: str = "") -> Path:
        folder = self.outputs_dir / dt.date.today().isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        nums = [int(m.group(1)) for e in os.scandir(folder) if (m := re.match(r"^(\d{5})-", e.name))]
        n = max(nums, default=0) + 1
        return folder / f"{n:05d}-{prefix}{seed}.png"

    def generate(self, prompt: str, negative: str = "", loras: Sequence[tuple[str, float]] = (), seed: int = -1,
                 steps: int = 20, guidance: float = 7.0, width: int = 512, height: int = 512,
                 sampler: str = "euler_a", batch_count: int = 1, clip_skip: int = 1, *,
                 model: str | None = None, vae: str | None = None, save: bool = True,
                 progress: Progress | None = None) -> list[Result]:
        """Generate ``batch_count`` images (seeds seed, seed+1, ...; -1 = random) with these LoRAs.

        Returns one :class:`Result` per image: unpacks as ``(PIL image, parameters text)``, ``.path`` is the PNG.
        """
        batch_count = max(1, int(batch_count))
        steps = max(1, int(steps))
        with self.lock:
            clean, merged = self._prepare_call(prompt, loras, model, vae, progress)
            w, h = self._size(width, height)
            active = self.apply_loras(merged, progress)
            self._set_sampler(sampler)
            seed = int(seed)
            seed = random_seed() if seed < 0 else seed
            results: list[Result] = []
            for b in range(batch_count):
                s = (seed + b) % (MAX_SEED + 1)
                label = f"Image {b + 1}/{batch_count}" if batch_count > 1 else "Generating"

                def on_step(i, b=b, label=label):
                    if progress:
                        progress((b + i / steps) / batch_count, f"{label}: step {i}/{steps}")

                if progress:
                    progress(b / batch_count, f"{label}: step 0/{steps}")
                image = self._render(clean, negative, s, steps, guidance, w, h, clip_skip, on_step)
                params = self._params(clean, negative, steps, sampler, guidance, s, w, h, clip_skip, active)
                path = str(save_png(image, self._next_path(s), params)) if save else None
                results.append(Result(image, params, path, s))
            return results

    def compare_grid(self, prompt: str, negative: str = "", lora_files: Sequence[str] = (),
                     strengths: Sequence[float] = (0.0, 0.5, 0.8, 1.0), seed: int = -1, steps: int = 20,
                     guidance: float = 7.0, width: int = 512, height: int = 512, sampler: str = "euler_a",
                     clip_skip: int = 1, *, model: str | None = None, vae: str | None = None, save: bool = True,
                     progress: Progress | None = None) -> GridResult:
        """One image per (LoRA file, strength), all with the same seed: rows = files, columns = strengths.

        Strength 0 is the base model without that LoRA. ``<lora:..>`` tags in the prompt apply to every cell.
        """
        files = [str(f) for f in lora_files if f]
        strengths = [float(s) for s in strengths]
        if not files:
            raise GenerateError("Choose at least one LoRA file to compare (for example each saved epoch).")
        if not strengths:
            raise GenerateError("Give at least one strength, for example: 0, 0.5, 0.8, 1.0")
        steps = max(1, int(steps))
        with self.lock:
            clean, extra = self._prepare_call(prompt, [], model, vae, progress)
            w, h = self._size(width, height)
            for f in files:
                if not Path(f).expanduser().is_file():
                    raise GenerateError(f"LoRA file not found: {f}. Refresh the list, or check the path.")
            self._set_sampler(sampler)
            seed = int(seed)
            seed = random_seed() if seed < 0 else seed
            total = len(files) * len(strengths)
            done = 0
            cache: dict[tuple, Any] = {}
            cells: list[list[Any]] = []
            for r, f in enumerate(files):
                row = []
                key_f = str(Path(f).expanduser().resolve())
                for c, s in enumerate(strengths):
                    combo = [(p, v) for p, v in extra if str(Path(p).resolve()) != key_f] + [(f, s)]
                    key = tuple(sorted((str(Path(p).resolve()), v) for p, v in combo if v != 0))
                    if key not in cache:  # strength 0 is the same image in every row: render it once
                        label = f"{Path(f).stem} at {s:g} ({done + 1}/{total})"

                        def on_step(i, label=label, done=done):
                            if progress:
                                progress((done + i / steps) / total, f"{label}: step {i}/{steps}")

                        self.apply_loras(combo, progress)
                        cache[key] = self._render(clean, negative, seed, steps, guidance, w, h, clip_skip, on_step)
                    row.append(cache[key])
                    done += 1
                cells.append(row)
            row_labels = grid_row_labels(files)
            col_labels = ["no LoRA" if s == 0 else f"strength {s:g}" for s in strengths]
            grid = draw_grid(cells, row_labels, col_labels)
            params = self._params(clean, negative, steps, sampler, guidance, seed, w, h, clip_skip,
                                  [(p, v) for p, v in extra if v])
            params += ("\nGrid: rows = " + ", ".join(Path(f).stem for f in files)
                       + "; columns = LoRA strength " + ", ".join(f"{s:g}" for s in strengths))
            path = str(save_png(grid, self._next_path(seed, "grid-"), params)) if save else None
            return GridResult(grid, cells, path, params)
