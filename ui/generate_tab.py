"""The Generate tab: try LoRAs on a base model, and compare saved epochs / strengths in a grid.

The work is done by core.generation.engine.Generator (imported lazily, in the callbacks, so the app starts
fast): one base pipeline stays loaded and LoRAs are switched on it without reloading. Images are
saved as PNGs with A1111-style parameters into ``<outputs folder>/generated/<date>/``.

    with gr.Tab("Generate"):
        generate_tab.build(settings)   # settings: dict or ui.settings.Settings
"""
from __future__ import annotations

import html
import os
import threading
import traceback
from pathlib import Path
from typing import Any

import gradio as gr

from core.generation.samplers import A1111_NAMES, SAMPLERS
from core import families
from core.families import Sampling

from .generate_choices import (SIZES_SEEN, generated_dir, lora_dirs, setting, base_family,
                               lora_choices, lora_notes, model_choices, model_label, native_size,
                               newest_run_base_model)
from .tools_view import generate_lora_info

LORA_SLOTS = 4
DEFAULT_STRENGTHS = "0, 0.5, 0.8, 1.0"
SAMPLER_CHOICES = [(A1111_NAMES.get(k, k), k) for k in SAMPLERS]
DEFAULT_SAMPLER = "euler_a" if "euler_a" in SAMPLERS else next(iter(SAMPLERS))
NOTE = ("Results are saved as PNG files with their settings (the A1111 `parameters` text) in "
        "`{folder}`.")

_GENERATOR = None
_GEN_LOCK = threading.Lock()


# --------------------------------------------------------------------------- settings and folders
def _generator(settings: Any, ctx: Any = None):
    global _GENERATOR
    from core.generation.engine import Generator

    with _GEN_LOCK:
        if _GENERATOR is None:
            _GENERATOR = Generator(generated_dir(settings))
        _GENERATOR.outputs_dir = generated_dir(settings)  # the Settings tab may have changed the folders
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


def _allow(blocks: Any, ctx: Any, path: Path) -> None:
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


def _error(message: str) -> gr.Error:
    """A message for the toast, which renders HTML: escape it, or `<lora:name>` swallows the text."""
    return gr.Error(html.escape(message), print_exception=False)


def _user_error(e: Exception) -> gr.Error:
    from core.generation.lora_files import GenerateError

    known = (GenerateError, ValueError, FileNotFoundError)
    if isinstance(e, known):
        return _error(str(e))
    text = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
    if "out of memory" in text.lower():
        return _error("The GPU ran out of memory: lower the width/height or the batch count, or close other "
                        "programs using the GPU.")
    traceback.print_exc()
    return _error(f"{type(e).__name__}: {text}")


def short_caption(result) -> str:
    """Gallery caption: the seed and the LoRAs (the full parameters are shown when an image is selected)."""
    import re

    first = result.parameters.splitlines()[0] if result.parameters else ""
    loras = [f"{n} {w}" for n, w in re.findall(r"<lora:([^:>]+):([^:>]+)>", first)]
    return " · ".join([f"seed {result.seed}", *loras])


def parse_strengths(text: str) -> list[float]:
    vals = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            vals.append(float(part))
        except ValueError:
            raise _error(f"Strengths: '{part}' is not a number. Write them like {DEFAULT_STRENGTHS}") from None
    if not vals:
        raise _error(f"Strengths: give at least one, like {DEFAULT_STRENGTHS}")
    return vals


# --------------------------------------------------------------------------- the tab
def build(settings: Any, ctx: Any = None) -> None:
    """Create the Generate tab's contents in the current Blocks context (inside the caller's gr.Tab)."""
    blocks = getattr(ctx, "blocks", None) or gr.context.Context.root_block

    models = model_choices(setting(settings, "models_dir"))
    default_model = newest_run_base_model(lora_dirs(settings, ctx)) or (models[0] if models else "")
    if default_model and default_model not in models:
        models = [default_model, *models]
    size = native_size(default_model) or 512  # reads configs / a header only

    gr.Markdown("Try your LoRAs: pick a base model and up to four LoRAs with a strength each, write a prompt "
                "and generate. **Compare** below renders a grid of saved epochs × strengths with one seed.",
                elem_classes=["lw-small"])
    with gr.Row(equal_height=False):
        # ---------------------------------------------------------------- left: what to generate
        with gr.Column(scale=5, min_width=380):
            with gr.Row(equal_height=True):
                model_dd = gr.Dropdown(choices=[(model_label(m), m) for m in models], value=default_model or None,
                                       allow_custom_value=True, label="Base model", scale=6, elem_id="gen-model",
                                       info="Models in your models folder; or type a path / Hugging Face repo id. "
                                            "The first generation loads it (slow), the next ones reuse it.")
                vae_tb = gr.Textbox(label="VAE (optional)", placeholder="path to a VAE", scale=3,
                                    elem_id="gen-vae", info="Leave empty to use the model's own VAE.")
            gr.Markdown("**LoRAs** — the newest files are first; strength 0 turns a LoRA off.",
                        elem_classes=["lw-small"])
            lora_dds, lora_sliders, lora_rows = [], [], []
            with gr.Group():
                for i in range(LORA_SLOTS):
                    with gr.Row(equal_height=True, visible=i == 0) as row:
                        lora_dds.append(gr.Dropdown(choices=[], value=None, allow_custom_value=True,
                                                    label=f"LoRA {i + 1}", scale=4, elem_id=f"gen-lora-{i + 1}"))
                        lora_sliders.append(gr.Slider(-1.0, 2.0, value=1.0, step=0.05, label="Strength", scale=2,
                                                      elem_id=f"gen-strength-{i + 1}"))
                    lora_rows.append(row)
            with gr.Row():
                refresh_btn = gr.Button("Refresh LoRA list", size="sm", elem_id="gen-refresh", scale=0,
                                        min_width=180)
                clear_btn = gr.Button("Clear LoRAs", size="sm", elem_id="gen-clear", scale=0, min_width=120)
            lora_info = gr.Markdown("", elem_id="gen-lora-info")
            generate_lora_info(model_dd, lora_dds)  # the fit check and "About the chosen LoRAs" (Tools tab view)
            prompt_tb = gr.Textbox(label="Prompt", lines=3, elem_id="gen-prompt",
                                   placeholder="zqx, a photo of a cat sitting on a chair",
                                   info="Include your LoRA's trigger word. LoRAs can also be added in the text, "
                                        "A1111 style: <lora:name:0.8> (name = the file name without .safetensors).")
            negative_tb = gr.Textbox(label="Negative prompt", lines=2, elem_id="gen-negative",
                                     placeholder="blurry, low quality")
            with gr.Row():
                sampler_dd = gr.Dropdown(choices=SAMPLER_CHOICES, value=DEFAULT_SAMPLER, label="Sampler",
                                         elem_id="gen-sampler", scale=2)
                steps_sl = gr.Slider(1, 150, value=20, step=1, label="Steps", elem_id="gen-steps", scale=3)
                cfg_sl = gr.Slider(1, 30, value=7.0, step=0.5, label="Guidance (CFG)", elem_id="gen-cfg", scale=3)
            with gr.Row():
                width_sl = gr.Slider(32, 2048, value=size, step=8, label="Width", elem_id="gen-width")
                height_sl = gr.Slider(32, 2048, value=size, step=8, label="Height", elem_id="gen-height")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=200):
                    seed_nb = gr.Number(value=-1, precision=0, label="Seed", elem_id="gen-seed",
                                        info="-1 = a new random seed each time")
                    with gr.Row():
                        random_btn = gr.Button("Random", size="sm", min_width=60, elem_id="gen-seed-random")
                        reuse_btn = gr.Button("Reuse last seed", size="sm", min_width=60, elem_id="gen-seed-reuse")
                with gr.Column(scale=4, min_width=200):
                    batch_sl = gr.Slider(1, 16, value=1, step=1, label="Batch count", elem_id="gen-batch",
                                         info="Images one after the other (seeds +1 each)")
                    clip_sl = gr.Slider(1, 4, value=1, step=1, label="Clip skip", elem_id="gen-clip-skip",
                                        info="SD 1.5 only; 2 for many anime models")
            with gr.Row(equal_height=True):
                generate_btn = gr.Button("Generate", variant="primary", elem_id="gen-generate", scale=4)
                unload_btn = gr.Button("Unload model", size="sm", elem_id="gen-unload", scale=1, min_width=120)
            gr.Markdown("The model stays loaded between generations. Unload it before training on the same "
                        "GPU, to give its memory back.", elem_classes=["lw-small"])
        # ---------------------------------------------------------------- right: results
        with gr.Column(scale=6, min_width=380):
            gallery = gr.Gallery(label="Images", columns=2, height=560, object_fit="contain", preview=False,
                                 elem_id="gen-gallery", show_label=True)
            status_md = gr.Markdown(NOTE.format(folder=generated_dir(settings)), elem_id="gen-status",
                                    elem_classes=["lw-small"])
            params_tb = gr.Textbox(label="Parameters of the selected image", lines=3, interactive=False,
                                   buttons=["copy"], elem_id="gen-params")

    with gr.Accordion("Compare: saved epochs × strengths (grid)", open=True, elem_id="gen-compare"):
        gr.Markdown("Uses the prompt and settings above with **one seed** for every cell. Rows = the LoRA files "
                    "(for example each saved epoch of a training), columns = strengths (0 = without the LoRA).",
                    elem_classes=["lw-small"])
        with gr.Row(equal_height=True):
            grid_files = gr.Dropdown(choices=[], value=[], multiselect=True, label="LoRA files (rows)", scale=5,
                                     elem_id="gen-grid-files")
            grid_strengths = gr.Textbox(value=DEFAULT_STRENGTHS, label="Strengths (columns)", scale=2,
                                        elem_id="gen-grid-strengths")
        with gr.Row():
            same_run_btn = gr.Button("All epochs of the newest training", size="sm", scale=0, min_width=260,
                                     elem_id="gen-grid-epochs")
            grid_btn = gr.Button("Make grid", variant="primary", scale=0, min_width=160, elem_id="gen-grid-make")
        grid_img = gr.Image(label="Grid", type="filepath", interactive=False, elem_id="gen-grid-image",
                            height=440)
        grid_status = gr.Markdown("", elem_id="gen-grid-status", elem_classes=["lw-small"])

    last_seed = gr.State(-1)
    shown_params = gr.State([])  # the full parameters text of each gallery image

    # ------------------------------------------------------------------ callbacks
    def refresh(model, *current):
        family = base_family(model)
        choices, infos = lora_choices(settings, ctx, family)
        paths = [c[1] for c in choices]
        picks, grid_pick = list(current[:LORA_SLOTS]), current[LORA_SLOTS] or []
        updates = [gr.Dropdown(choices=choices, value=v if v in paths or (v and Path(v).is_file()) else None)
                   for v in picks]
        grid = gr.Dropdown(choices=choices, value=[v for v in grid_pick if v in paths])
        return [*updates, grid, lora_notes([v for v in picks if v], family), *_row_visibility(picks)]

    def on_model_change(model, width, height, *current):
        out = refresh(model, *current)
        size = native_size(model)
        w = h = gr.update()
        if size:  # follow the model's native size unless the user chose another one
            if int(width) in SIZES_SEEN:
                w = size
            if int(height) in SIZES_SEEN:
                h = size
        return [*out, w, h]

    def family_controls(model, cfg):
        """What the base model's family samples with (core/families): negative prompt, sampler list, guidance
        (Flux dev: distilled guidance; schnell: none, 4 steps), clip skip."""
        spec = families.find(base_family(model))
        way = spec.sampling_for(model) if spec else Sampling()
        usual = {w.guidance for f in families.all_families() for w in (f.sampling, *f.variant_sampling.values())}
        value = (way.guidance if way.guidance is not None and float(cfg) in usual and float(cfg) != way.guidance
                 else gr.update())
        return [gr.update(visible=way.negative_prompt), gr.update(visible=way.samplers),
                gr.update(label=way.guidance_label, visible=way.guidance is not None, value=value),
                gr.update(visible=way.clip_skip), gr.update(value=way.steps) if way.steps else gr.update()]

    def _row_visibility(picks):
        # the first row always; then one empty row after the last chosen LoRA
        return [gr.Row(visible=i == 0 or bool(picks[i]) or bool(picks[i - 1])) for i in range(LORA_SLOTS)]

    def on_pick(model, *picks):
        return [lora_notes([p for p in picks if p], base_family(model)), *_row_visibility(list(picks))]

    def clear_loras():
        return [*(gr.Dropdown(value=None) for _ in range(LORA_SLOTS)),
                *(gr.Slider(value=1.0) for _ in range(LORA_SLOTS)), "", *_row_visibility([None] * LORA_SLOTS)]

    def newest_epochs(model):
        from core.generation.lora_files import list_loras

        infos = list_loras(lora_dirs(settings, ctx), base_family(model))
        if not infos:
            raise _error("No LoRA files found in your outputs / LoRA folders.")
        newest = infos[0]
        group = newest.output_name or newest.name
        folder = Path(newest.path).parent
        same = [i for i in infos if (i.output_name or i.name) == group and Path(i.path).parent == folder]
        same.sort(key=lambda i: (i.epoch if i.epoch is not None else 10**9, i.mtime))
        return gr.Dropdown(value=[i.path for i in same])

    def on_generate(model, vae, *args, progress=gr.Progress()):
        picks, strengths = args[:LORA_SLOTS], args[LORA_SLOTS:2 * LORA_SLOTS]
        (prompt, negative, sampler, steps, cfg, width, height, seed, batch, clip_skip) = args[2 * LORA_SLOTS:]
        if not (prompt or "").strip():
            raise _error("Write a prompt first.")
        gen = _generator(settings, ctx)
        loras = [(p, float(s)) for p, s in zip(picks, strengths) if p]
        try:
            results = gen.generate(prompt, negative or "", loras, seed=int(seed if seed is not None else -1),
                                   steps=int(steps), guidance=float(cfg), width=int(width), height=int(height),
                                   sampler=sampler, batch_count=int(batch), clip_skip=int(clip_skip),
                                   model=model or "", vae=vae or "",
                                   progress=lambda f, text: progress(min(max(f, 0.0), 1.0), desc=text))
        except gr.Error:
            raise
        except Exception as e:
            raise _user_error(e) from e
        _allow(blocks, ctx, gen.outputs_dir)
        items = [(r.path, short_caption(r)) for r in results]
        seeds = ", ".join(str(r.seed) for r in results)
        names = [Path(r.path).name for r in results if r.path]
        files = names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}" if names else ""
        folder = Path(results[0].path).parent if results and results[0].path else gen.outputs_dir
        text = (f"Done: {len(results)} image{'s' if len(results) != 1 else ''}, seed {seeds}. "
                f"Saved as {files} in `{folder}`.")
        if gen.warnings:
            text += "\n\n" + "\n".join(f"⚠ {html.escape(w)}" for w in gen.warnings)
        params = [r.parameters for r in results]
        return items, text, params[0] if params else "", results[0].seed if results else -1, params

    def on_unload():
        name = unload_model()
        if not name:
            return "No model is loaded."
        return f"Unloaded {name}: its memory is free. The next generation loads it again."

    def on_select(params: list[str], evt: gr.SelectData):
        i = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        return params[i] if params and 0 <= i < len(params) else gr.update()

    def on_grid(model, vae, files, strengths_text, prompt, negative, sampler, steps, cfg, width, height, seed,
                clip_skip, progress=gr.Progress()):
        strengths = parse_strengths(strengths_text)
        if not files:
            raise _error("Choose at least one LoRA file for the rows (or click 'All epochs of the newest "
                         "training').")
        if not (prompt or "").strip():
            raise _error("Write a prompt first (above).")
        gen = _generator(settings, ctx)
        try:
            res = gen.compare_grid(prompt, negative or "", list(files), strengths,
                                   seed=int(seed if seed is not None else -1), steps=int(steps),
                                   guidance=float(cfg), width=int(width), height=int(height), sampler=sampler,
                                   clip_skip=int(clip_skip), model=model or "", vae=vae or "",
                                   progress=lambda f, text: progress(min(max(f, 0.0), 1.0), desc=text))
        except gr.Error:
            raise
        except Exception as e:
            raise _user_error(e) from e
        _allow(blocks, ctx, gen.outputs_dir)
        seed_line = next((ln for ln in res.parameters.splitlines() if ln.startswith("Steps:")), "")
        text = f"{len(files)} × {len(strengths)} grid saved as `{res.path}`. {seed_line}"
        return res.path, text

    pick_inputs = [*lora_dds, grid_files]
    refresh_outputs = [*lora_dds, grid_files, lora_info, *lora_rows]
    refresh_btn.click(refresh, [model_dd, *pick_inputs], refresh_outputs)
    model_dd.change(on_model_change, [model_dd, width_sl, height_sl, *pick_inputs],
                    [*refresh_outputs, width_sl, height_sl])
    model_dd.change(family_controls, [model_dd, cfg_sl], [negative_tb, sampler_dd, cfg_sl, clip_sl, steps_sl])
    for dd in lora_dds:
        dd.change(on_pick, [model_dd, *lora_dds], [lora_info, *lora_rows])
    clear_btn.click(clear_loras, None, [*lora_dds, *lora_sliders, lora_info, *lora_rows])
    random_btn.click(lambda: -1, None, seed_nb)
    reuse_btn.click(lambda s: s, last_seed, seed_nb)
    gen_inputs = [model_dd, vae_tb, *lora_dds, *lora_sliders, prompt_tb, negative_tb, sampler_dd, steps_sl, cfg_sl,
                  width_sl, height_sl, seed_nb, batch_sl, clip_sl]
    gen_outputs = [gallery, status_md, params_tb, last_seed, shown_params]
    generate_btn.click(on_generate, gen_inputs, gen_outputs, show_progress_on=[gallery],
                       concurrency_id="gen-gpu", concurrency_limit=1)
    gallery.select(on_select, shown_params, params_tb)
    unload_btn.click(on_unload, None, status_md, concurrency_id="gen-gpu", concurrency_limit=1)
    same_run_btn.click(newest_epochs, model_dd, grid_files)
    grid_btn.click(on_grid, [model_dd, vae_tb, grid_files, grid_strengths, prompt_tb, negative_tb, sampler_dd,
                             steps_sl, cfg_sl, width_sl, height_sl, seed_nb, clip_sl], [grid_img, grid_status],
                   show_progress_on=[grid_img], concurrency_id="gen-gpu", concurrency_limit=1)

    # fill the LoRA lists when the page opens (cheap: headers only), without importing torch at build time
    if blocks is not None:
        blocks.load(refresh, [model_dd, *pick_inputs], refresh_outputs)
