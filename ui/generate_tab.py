"""The Generate tab: try LoRAs on a base model, and compare saved epochs / strengths in a grid.

The work is done by core.generation.engine.Generator (imported lazily, in the callbacks, so the app starts
fast): one base pipeline stays loaded and LoRAs are switched on it without reloading. Images are
saved as PNGs with A1111-style parameters into ``<outputs folder>/generated/<date>/``.
What the tab does is in ui/generate_actions.py (plain functions); here: the layout, then the wiring.

    with gr.Tab("Generate"):
        generate_tab.build(settings)   # settings: dict or ui.settings.Settings
"""
from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.generation.samplers import A1111_NAMES, SAMPLERS

from . import generate_actions as act
from .generate_actions import DEFAULT_STRENGTHS, LORA_SLOTS, unload_model
from .generate_choices import (generated_dir, lora_dirs, model_choices, model_label, native_size,
                               newest_run_base_model, setting)
from .tools_view import generate_lora_info

SAMPLER_CHOICES = [(A1111_NAMES.get(k, k), k) for k in SAMPLERS]
DEFAULT_SAMPLER = "euler_a" if "euler_a" in SAMPLERS else next(iter(SAMPLERS))
NOTE = ("Results are saved as PNG files with their settings (the A1111 `parameters` text) in "
        "`{folder}`.")


def _error(message: str) -> gr.Error:
    """A message for the toast, which renders HTML: escape it, or `<lora:name>` swallows the text."""
    return gr.Error(html.escape(message), print_exception=False)


# --------------------------------------------------------------------------- layout
def _model_row(models: list[str], default_model: str) -> dict:
    with gr.Row(equal_height=True):
        model_dd = gr.Dropdown(choices=[(model_label(m), m) for m in models], value=default_model or None,
                               allow_custom_value=True, label="Base model", scale=6, elem_id="gen-model",
                               info="Models in your models folder; or type a path / Hugging Face repo id. "
                                    "The first generation loads it (slow), the next ones reuse it.")
        vae_tb = gr.Textbox(label="VAE (optional)", placeholder="path to a VAE", scale=3,
                            elem_id="gen-vae", info="Leave empty to use the model's own VAE.")
    return dict(model_dd=model_dd, vae_tb=vae_tb)


def _lora_pickers(model_dd) -> dict:
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
        refresh_btn = gr.Button("Refresh LoRA list", size="sm", elem_id="gen-refresh", scale=0, min_width=180)
        clear_btn = gr.Button("Clear LoRAs", size="sm", elem_id="gen-clear", scale=0, min_width=120)
    lora_info = gr.Markdown("", elem_id="gen-lora-info")
    generate_lora_info(model_dd, lora_dds)  # the fit check and "About the chosen LoRAs" (Tools tab view)
    return dict(lora_dds=lora_dds, lora_sliders=lora_sliders, lora_rows=lora_rows, refresh_btn=refresh_btn,
                clear_btn=clear_btn, lora_info=lora_info)


def _prompt_and_sampling(size: int) -> dict:
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
    return dict(prompt_tb=prompt_tb, negative_tb=negative_tb, sampler_dd=sampler_dd, steps_sl=steps_sl,
                cfg_sl=cfg_sl, width_sl=width_sl, height_sl=height_sl)


def _seed_batch_and_buttons() -> dict:
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
    return dict(seed_nb=seed_nb, random_btn=random_btn, reuse_btn=reuse_btn, batch_sl=batch_sl, clip_sl=clip_sl,
                generate_btn=generate_btn, unload_btn=unload_btn)


def _results(settings: Any) -> dict:
    gallery = gr.Gallery(label="Images", columns=2, height=560, object_fit="contain", preview=False,
                         elem_id="gen-gallery", show_label=True)
    status_md = gr.Markdown(NOTE.format(folder=generated_dir(settings)), elem_id="gen-status",
                            elem_classes=["lw-small"])
    params_tb = gr.Textbox(label="Parameters of the selected image", lines=3, interactive=False,
                           buttons=["copy"], elem_id="gen-params")
    return dict(gallery=gallery, status_md=status_md, params_tb=params_tb)


def _compare() -> dict:
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
    return dict(grid_files=grid_files, grid_strengths=grid_strengths, same_run_btn=same_run_btn, grid_btn=grid_btn,
                grid_img=grid_img, grid_status=grid_status)


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
    c: dict = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=380):  # left: what to generate
            c.update(_model_row(models, default_model))
            c.update(_lora_pickers(c["model_dd"]))
            c.update(_prompt_and_sampling(size))
            c.update(_seed_batch_and_buttons())
        with gr.Column(scale=6, min_width=380):  # right: results
            c.update(_results(settings))
    c.update(_compare())
    c.update(last_seed=gr.State(-1), shown_params=gr.State([]))  # shown_params: the full text of each image
    ui = SimpleNamespace(**c)
    refresh = _wire_loras(ui, settings, ctx)
    _wire_generate(ui, settings, ctx, blocks)
    _wire_grid(ui, settings, ctx, blocks)
    # fill the LoRA lists when the page opens (cheap: headers only), without importing torch at build time
    if blocks is not None:
        blocks.load(*refresh)


# --------------------------------------------------------------------------- wiring: thin adapters to gr updates
def _rows(visible: list[bool]) -> list:
    return [gr.Row(visible=v) for v in visible]


def _wire_loras(ui: SimpleNamespace, settings: Any, ctx: Any) -> tuple:
    """The LoRA pickers, the model's family and size; returns the refresh event (fn, inputs, outputs)."""
    def refresh(model, *current):
        got = act.lora_lists(settings, ctx, model, current[:LORA_SLOTS], current[LORA_SLOTS])
        return [*(gr.Dropdown(choices=got.choices, value=v) for v in got.picks),
                gr.Dropdown(choices=got.choices, value=got.grid), got.notes, *_rows(got.rows)]

    def on_model_change(model, width, height, *current):
        w, h = act.follow_size(model, width, height)
        return [*refresh(model, *current), gr.update() if w is None else w, gr.update() if h is None else h]

    def family_controls(model, cfg):
        way = act.family_controls(model, cfg)
        value = {} if way.guidance_value is None else {"value": way.guidance_value}  # the user's own value stays
        return [gr.update(visible=way.negative_prompt), gr.update(visible=way.samplers),
                gr.update(label=way.guidance_label, visible=way.guidance, **value),
                gr.update(visible=way.clip_skip), gr.update() if way.steps is None else gr.update(value=way.steps)]

    def on_pick(model, *picks):
        return [act.pick_notes(model, picks), *_rows(act.row_visibility(list(picks)))]

    def clear_loras():
        return [*(gr.Dropdown(value=None) for _ in range(LORA_SLOTS)),
                *(gr.Slider(value=1.0) for _ in range(LORA_SLOTS)), "",
                *_rows(act.row_visibility([None] * LORA_SLOTS))]

    pick_inputs = [*ui.lora_dds, ui.grid_files]
    refresh_outputs = [*ui.lora_dds, ui.grid_files, ui.lora_info, *ui.lora_rows]
    ui.refresh_btn.click(refresh, [ui.model_dd, *pick_inputs], refresh_outputs)
    ui.model_dd.change(on_model_change, [ui.model_dd, ui.width_sl, ui.height_sl, *pick_inputs],
                       [*refresh_outputs, ui.width_sl, ui.height_sl])
    ui.model_dd.change(family_controls, [ui.model_dd, ui.cfg_sl],
                       [ui.negative_tb, ui.sampler_dd, ui.cfg_sl, ui.clip_sl, ui.steps_sl])
    for dd in ui.lora_dds:
        dd.change(on_pick, [ui.model_dd, *ui.lora_dds], [ui.lora_info, *ui.lora_rows])
    ui.clear_btn.click(clear_loras, None, [*ui.lora_dds, *ui.lora_sliders, ui.lora_info, *ui.lora_rows])
    return refresh, [ui.model_dd, *pick_inputs], refresh_outputs


def _wire_generate(ui: SimpleNamespace, settings: Any, ctx: Any, blocks: Any) -> None:
    def on_generate(model, vae, *args, progress=gr.Progress()):
        picks, strengths, rest = args[:LORA_SLOTS], args[LORA_SLOTS:2 * LORA_SLOTS], args[2 * LORA_SLOTS:]
        try:
            request = act.generate_request(model, vae, picks, strengths, *rest)
            gen = act.generator(settings, ctx)
            results = act.run(gen.generate, request, act.progress_to(progress))
        except act.InputError as e:
            raise _error(str(e)) from e
        act.allow_path(blocks, ctx, gen.outputs_dir)
        shown = act.generated(results, gen.warnings, gen.outputs_dir)
        return shown.items, shown.status, shown.first_params, shown.seed, shown.params

    def on_select(params: list[str], evt: gr.SelectData):
        text = act.selected_params(params, evt.index)
        return gr.update() if text is None else text

    ui.random_btn.click(lambda: -1, None, ui.seed_nb)
    ui.reuse_btn.click(lambda s: s, ui.last_seed, ui.seed_nb)
    gen_inputs = [ui.model_dd, ui.vae_tb, *ui.lora_dds, *ui.lora_sliders, ui.prompt_tb, ui.negative_tb,
                  ui.sampler_dd, ui.steps_sl, ui.cfg_sl, ui.width_sl, ui.height_sl, ui.seed_nb, ui.batch_sl,
                  ui.clip_sl]
    gen_outputs = [ui.gallery, ui.status_md, ui.params_tb, ui.last_seed, ui.shown_params]
    ui.generate_btn.click(on_generate, gen_inputs, gen_outputs, show_progress_on=[ui.gallery],
                          concurrency_id="gen-gpu", concurrency_limit=1)
    ui.gallery.select(on_select, ui.shown_params, ui.params_tb)
    ui.unload_btn.click(lambda: act.unload_text(unload_model()), None, ui.status_md, concurrency_id="gen-gpu",
                        concurrency_limit=1)


def _wire_grid(ui: SimpleNamespace, settings: Any, ctx: Any, blocks: Any) -> None:
    def newest_epochs(model):
        try:
            return gr.Dropdown(value=act.newest_epochs(settings, ctx, model))
        except act.InputError as e:
            raise _error(str(e)) from e

    def on_grid(model, vae, files, strengths_text, *rest, progress=gr.Progress()):
        try:
            request = act.grid_request(model, vae, files, strengths_text, *rest)
            gen = act.generator(settings, ctx)
            res = act.run(gen.compare_grid, request, act.progress_to(progress))
        except act.InputError as e:
            raise _error(str(e)) from e
        act.allow_path(blocks, ctx, gen.outputs_dir)
        return act.grid_done(res, request)

    ui.same_run_btn.click(newest_epochs, ui.model_dd, ui.grid_files)
    ui.grid_btn.click(on_grid, [ui.model_dd, ui.vae_tb, ui.grid_files, ui.grid_strengths, ui.prompt_tb,
                                ui.negative_tb, ui.sampler_dd, ui.steps_sl, ui.cfg_sl, ui.width_sl, ui.height_sl,
                                ui.seed_nb, ui.clip_sl], [ui.grid_img, ui.grid_status],
                      show_progress_on=[ui.grid_img], concurrency_id="gen-gpu", concurrency_limit=1)
