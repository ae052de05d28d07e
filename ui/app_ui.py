"""The whole page: header and tabs (Dataset, Captioning, Training, Generate, Tools, Settings)."""
from __future__ import annotations

import importlib
import importlib.util
import inspect

import gradio as gr

from . import settings_tab, training_tab
from .context import AppContext
from .settings import Settings

CSS = """
.lw-header h1 { margin: 0; font-size: 1.5rem; }
.lw-header p { margin: 0.2rem 0 0; opacity: 0.8; }
.lw-group-title p { margin: 0.1rem 0 0.2rem 0.4rem; font-size: 0.95rem; }
.lw-small, .lw-small p { font-size: 0.85rem; opacity: 0.8; }
.lw-panel { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px 14px;
            background: var(--background-fill-secondary); }
.lw-empty { opacity: 0.85; }
.lw-run-name { font-weight: 600; font-size: 1.05rem; margin-left: 0.4rem; }
.lw-badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 0.8rem; font-weight: 600;
            color: #fff; background: #6b7280; }
.lw-badge.lw-running { background: #2563eb; }
.lw-badge.lw-completed { background: #15803d; }
.lw-badge.lw-failed { background: #b91c1c; }
.lw-badge.lw-stopped { background: #6b7280; }
.lw-badge.lw-interrupted { background: #b45309; }
.lw-bar { height: 14px; border-radius: 7px; background: var(--border-color-primary); overflow: hidden; margin: 10px 0 6px; }
.lw-fill { height: 100%; background: #2563eb; transition: width 0.6s ease; }
.lw-fill.lw-completed { background: #15803d; }
.lw-fill.lw-failed { background: #b91c1c; }
.lw-fill.lw-interrupted { background: #b45309; }
.lw-fill.lw-stopped { background: #6b7280; }
.lw-steps { font-variant-numeric: tabular-nums; }
.lw-ok { color: #15803d; font-weight: 600; margin-top: 6px; }
.lw-warn { color: #b45309; margin-top: 6px; }
.lw-err { color: #b91c1c; margin-top: 6px; }
.lw-note { margin-top: 6px; }
.lw-best { margin-top: 6px; color: #9a3412; }
.lw-errlines { white-space: pre-wrap; font-size: 0.8rem; max-height: 16rem; overflow: auto; margin-top: 6px;
               padding: 6px 8px; border-radius: 6px; background: var(--background-fill-primary); }
.lw-errors { border: 1px solid #b91c1c; border-radius: 8px; padding: 8px 12px; color: #b91c1c; }
.lw-errors ul, .lw-problems { margin: 4px 0 0 1.1rem; }
.lw-plan { border-left: 4px solid #2563eb; padding: 6px 10px; margin: 2px 0 8px;
           background: var(--background-fill-secondary); border-radius: 4px; }
.lw-problems { color: #b45309; }
.lw-fit { border-left-color: #7c3aed; }
.lw-guardrails { border: 1px solid #d97706; border-radius: 8px; padding: 8px 12px; margin-bottom: 6px;
                 background: var(--background-fill-secondary); }
.lw-guardrails b { color: #b45309; }
.lw-guardrails ul { margin: 4px 0 0 1.1rem; font-size: 0.9rem; }
.lw-table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 2px 0 10px; }
.lw-table, .lw-table tr, .lw-table th, .lw-table td { border: 0 !important; font-size: 0.9rem !important; }
.lw-table th, .lw-table td { text-align: left; padding: 3px 10px 3px 6px; border-bottom: 1px solid var(--border-color-primary) !important;
                             vertical-align: top; overflow-wrap: anywhere; }
.lw-table th { font-weight: 600; background: var(--background-fill-secondary); }
.lw-kv td:first-child { font-weight: 600; white-space: nowrap; width: 11rem; }
.lw-tools-block h4, .lw-tools-about h3 { margin: 8px 0 4px; font-size: 1rem; font-weight: 600; }
.lw-tools-cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 0 16px; }
"""


def _build_optional_tab(ctx: AppContext, module_name: str, title: str, tab_id: str) -> None:
    """A tab whose module may be absent (no module, no tab). ``build`` gets whichever of ctx/settings/blocks
    it asks for."""
    try:
        if importlib.util.find_spec(module_name) is None:
            return
    except (ImportError, ValueError):
        return
    module = importlib.import_module(module_name)
    build = getattr(module, "build", None)
    if build is None:
        return
    offered = {"ctx": ctx, "context": ctx, "settings": ctx.settings, "blocks": ctx.blocks}
    params = inspect.signature(build).parameters
    kwargs = {k: v for k, v in offered.items() if k in params}
    with gr.Tab(title, id=tab_id):
        build(**kwargs)


def build_app(settings: Settings) -> tuple[gr.Blocks, AppContext]:
    ctx = AppContext(settings=settings)
    with gr.Blocks(title="LoRA Workshop", fill_width=True) as demo:
        ctx.blocks = demo
        gr.HTML('<div class="lw-header"><h1>LoRA Workshop</h1>'
                "<p>Train LoRAs for Stable Diffusion 1.5, SDXL, Flux.1 and FLUX.2 klein on your own computer.</p></div>")
        # Training opens first: on a fresh install it is ready to train the demo (toy model + demo dataset).
        with gr.Tabs(selected="training") as tabs:
            _build_optional_tab(ctx, "ui.dataset_tab", "Dataset", "dataset")
            _build_optional_tab(ctx, "ui.caption_tab", "Captioning", "captioning")
            with gr.Tab("Training", id="training"):
                training_tab.build(ctx)
            _build_optional_tab(ctx, "ui.generate_tab", "Generate", "generate")
            _build_optional_tab(ctx, "ui.tools_tab", "Tools", "tools")
            with gr.Tab("Settings", id="settings"):
                settings_tab.build(ctx)
        ctx.components["tabs"] = tabs
        for wire in ctx.after_build:
            wire()
    return demo, ctx
