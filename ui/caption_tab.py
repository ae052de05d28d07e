"""The Captioning tab: write a caption file next to every image of a folder with BLIP, CLIP Interrogator,
WD14 or Florence-2.

The work is ``core.caption.run.caption_folder`` in a background thread (one run at a time); the Start
handler polls it and shows progress with the time left, then the summary and the images with their
new captions. The backends import their ML libraries only when a run starts.
"""
from __future__ import annotations

import html
import re
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core.caption.base import CaptionError, Captioner, backends
from core.caption.run import EXISTING, Progress, Summary, caption_folder, open_rgb, rel

GALLERY_MAX = 24
THUMB = 256
EXISTING_LABELS = {"skip": "Skip images that already have a caption", "overwrite": "Overwrite existing captions",
                   "append": "Append to existing captions"}
DEVICES = [("Automatic (GPU when there is one)", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda")]
DEFAULT_BACKEND = "blip"


class Job:
    """One captioning run in a background thread."""

    def __init__(self, folder: str, captioner: Captioner, **kwargs: Any):
        self.cancel = threading.Event()
        self.progress = Progress(0, 0, "starting")
        self.summary: Summary | None = None
        self.error = ""
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(folder, captioner, kwargs), daemon=True,
                                       name="captioning")
        self.thread.start()

    def _run(self, folder: str, captioner: Captioner, kwargs: dict) -> None:
        try:
            self.summary = caption_folder(folder, captioner, progress=self._on_progress, cancel=self.cancel, **kwargs)
        except CaptionError as e:
            self.error = str(e)
        except Exception as e:  # shown to the user; the app goes on
            self.error = f"{type(e).__name__}: {e}"

    def _on_progress(self, p: Progress) -> None:
        self.progress = p

    def status(self) -> str:
        p = self.progress
        if self.cancel.is_set():
            p = Progress(p.done, p.total, "cancelling after the current images…")
        return status_html(p)


_JOB: Job | None = None
_JOB_LOCK = threading.Lock()


def local_models(models_dir: str, cls: type[Captioner]) -> list[str]:
    """Folders in the models folder (and its captioners/ sub-folder) holding a model for this backend."""
    root = Path(models_dir).expanduser() if models_dir else None
    found: list[str] = []
    for base in ([root, root / "captioners"] if root else []):
        try:
            entries = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        found += [str(p) for p in entries if cls.looks_like(p)]
    return found


def model_choices(models_dir: str, cls: type[Captioner]) -> list[tuple[str, str]]:
    hub = [cls.default_model, *cls.other_models]
    return [*((f"{m} (downloaded on first use)", m) for m in hub),
            *((f"{Path(p).name} (local folder)", p) for p in local_models(models_dir, cls))]


def backend_info(cls: type[Captioner]) -> str:
    return f"**{cls.title}**: {cls.description}"


def status_html(p: Progress, state: str = "running") -> str:
    pct = 100.0 * p.done / p.total if p.total else (100.0 if state != "running" else 0.0)
    return (f'<div class="lw-bar" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="lw-fill lw-{state}" style="width:{pct:.1f}%"></div></div>'
            f'<div class="lw-steps">{html.escape(p.text)}</div>')


def error_html(message: str) -> str:
    """The message in a red box, `code` kept as code (the box is HTML, which Markdown leaves alone)."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(message))
    return f'<div class="lw-errors">{text}</div>'


def summary_markdown(summary: Summary, caption_ext: str = ".txt") -> str:
    lines = [f"**{summary.headline}**"]
    if summary.failed:
        lines.append("\nThese images were not captioned:")
        lines += [f"- `{rel(r.path, summary.folder)}`: {html.escape(r.reason)}" for r in summary.failed]
    if summary.captioned:
        lines.append(f"\nThe captions are the `{caption_ext}` files next to the images in `{summary.folder}`. "
                     "Read them through (below) and fix what the model got wrong: the Dataset tab's caption "
                     "editor helps.")
    elif not summary.results:
        lines.append(f"\nNo images found in `{summary.folder}` (.png, .jpg, .webp ...; sub-folders included).")
    return "\n".join(lines)


def caption_rows(summary: Summary) -> list[list[str]]:
    """(image, new caption or why it failed) for the table under the gallery."""
    return [[rel(r.path, summary.folder), r.caption if r.status == "captioned" else f"✗ {r.reason}"]
            for r in summary.results if r.status != "skipped"]


def gallery_items(summary: Summary) -> list[tuple[Any, str]]:
    items = []
    for r in summary.results:
        if r.status == "skipped" or len(items) >= GALLERY_MAX:
            continue
        try:
            im = open_rgb(r.path)
        except Exception:
            continue
        im.thumbnail((THUMB, THUMB))
        items.append((im, r.caption if r.status == "captioned" else f"failed: {r.reason}"))
    return items


def _option_component(opt, elem_id: str):
    info = opt.help
    if opt.choices:
        return gr.Radio(choices=list(opt.choices), value=opt.default, label=opt.label or opt.name, info=info,
                        elem_id=elem_id)
    if opt.kind in (int, float) and opt.minimum is not None and opt.maximum is not None:
        step = 1 if opt.kind is int else 0.01
        return gr.Slider(opt.minimum, opt.maximum, value=opt.default, step=step, label=opt.label or opt.name,
                         info=info, elem_id=elem_id)
    if opt.kind in (int, float):
        return gr.Number(value=opt.default, label=opt.label or opt.name, info=info, elem_id=elem_id,
                         precision=0 if opt.kind is int else None)
    return gr.Textbox(value=opt.default, label=opt.label or opt.name, info=info, elem_id=elem_id)


def build(ctx: Any) -> None:
    """Create the tab's contents in the current Blocks context (inside the caller's gr.Tab)."""
    settings = ctx.settings
    found = backends()
    default = DEFAULT_BACKEND if DEFAULT_BACKEND in found else next(iter(found))

    def models_dir() -> str:
        return getattr(settings, "models_dir", "") or ""

    gr.Markdown("Let an AI model write a caption for every image of a folder: a text file with the same name "
                "next to each image (`cat.png` → `cat.txt`), which training reads. Models are downloaded the "
                "first time (0.4-3 GB) and then run on your GPU, or slowly on the CPU.", elem_classes=["lw-small"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=380):
            folder_tb = gr.Textbox(label="Image folder", elem_id="cap-folder",
                                   placeholder="/path/to/my_dataset  (sub-folders included)",
                                   info="The folder with your training images.")
            backend_radio = gr.Radio(choices=[(cls.title, name) for name, cls in found.items()], value=default,
                                     label="Captioning model", elem_id="cap-backend")
            backend_md = gr.Markdown(backend_info(found[default]), elem_id="cap-backend-info",
                                     elem_classes=["lw-small"])
            model_dd = gr.Dropdown(choices=model_choices(models_dir(), found[default]),
                                   value=found[default].default_model, allow_custom_value=True, label="Model",
                                   elem_id="cap-model",
                                   info=f"{found[default].model_help}. Downloaded folders can go into "
                                        f"{Path(models_dir() or 'models') / 'captioners'}.")
            option_boxes: list[tuple[str, str, Any]] = []  # (backend, option name, component)
            groups = {}
            for name, cls in found.items():
                shown = [o for o in cls.options if o.gui]
                with gr.Group(visible=name == default, elem_id=f"cap-options-{name}") as grp:
                    for opt in shown:
                        comp = _option_component(opt, f"cap-{name}-{opt.name.replace('_', '-')}")
                        option_boxes.append((name, opt.name, comp))
                groups[name] = grp
            prefix_tb = gr.Textbox(label="Prefix (your trigger word)", placeholder="zqx, ", elem_id="cap-prefix",
                                   info="Put in front of every caption, e.g. 'zqx, '. Not added twice.")
            existing_radio = gr.Radio(choices=[(EXISTING_LABELS[k], k) for k in EXISTING], value="skip",
                                      label="Images that already have a caption", elem_id="cap-existing")
            device_dd = gr.Dropdown(choices=DEVICES, value="auto", label="Run on", elem_id="cap-device")
            with gr.Row():
                start_btn = gr.Button("Start captioning", variant="primary", elem_id="cap-start", scale=3)
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cap-cancel", scale=1, min_width=120,
                                       interactive=False)
        with gr.Column(scale=6, min_width=380):
            status = gr.HTML("", elem_id="cap-status")
            summary_md = gr.Markdown("", elem_id="cap-summary")
            gallery = gr.Gallery(label="Images and their new captions", columns=4, height=360, object_fit="contain",
                                 preview=False, visible=False, elem_id="cap-gallery")
            table = gr.Dataframe(headers=["Image", "Caption"], value=None, label="New captions", wrap=True,
                                 interactive=False, visible=False, elem_id="cap-table",
                                 column_widths=["25%", "75%"])

    # ------------------------------------------------------------------ callbacks
    def on_backend(name):
        cls = found[name]
        return [backend_info(cls),
                gr.Dropdown(choices=model_choices(models_dir(), cls), value=cls.default_model,
                            info=f"{cls.model_help}. Downloaded folders can go into "
                                 f"{Path(models_dir() or 'models') / 'captioners'}."),
                *(gr.Group(visible=n == name) for n in groups)]

    def idle(status_text: str, summary_text: str, summary: Summary | None = None):
        rows = caption_rows(summary) if summary is not None else []
        results = ((gr.Gallery(value=gallery_items(summary), visible=True), gr.Dataframe(value=rows, visible=True))
                   if rows else (gr.Gallery(visible=False), gr.Dataframe(visible=False)))
        return (status_text, summary_text, *results, gr.Button(interactive=True), gr.Button(interactive=False))

    def on_start(folder, backend, model, prefix, existing, device, *values):
        global _JOB
        folder = (folder or "").strip()
        if not folder:
            yield idle("", "⚠ Enter the folder of your images first.")
            return
        cls = found[backend]
        options = {opt: v for (b, opt, _), v in zip(option_boxes, values) if b == backend}
        for opt in cls.options:
            if opt.name in options and opt.kind is int and options[opt.name] is not None:
                options[opt.name] = int(options[opt.name])
        with _JOB_LOCK:
            if _JOB is not None and _JOB.thread.is_alive():
                yield idle(gr.update(), "⚠ A captioning run is already going: wait for it or cancel it.")
                return
            try:
                captioner = cls(model or "", device=device or "auto", **options)
            except CaptionError as e:
                yield idle("", error_html(str(e)))
                return
            job = _JOB = Job(folder, captioner, prefix=prefix or "", existing=existing or "skip")
        while job.thread.is_alive():
            yield (job.status(), "", gr.Gallery(visible=False), gr.Dataframe(visible=False),
                   gr.Button(interactive=False), gr.Button(interactive=True))
            job.thread.join(0.4)
        if job.error:
            yield idle("", error_html(job.error))
            return
        s = job.summary
        state = "stopped" if s.cancelled else "failed" if s.failed and not s.captioned else "completed"
        yield idle(status_html(job.progress, state), summary_markdown(s), s)

    def on_cancel():
        job = _JOB
        if job is None or not job.thread.is_alive():
            return gr.update()
        job.cancel.set()
        return job.status()

    backend_radio.change(on_backend, backend_radio, [backend_md, model_dd, *groups.values()])
    start_btn.click(on_start, [folder_tb, backend_radio, model_dd, prefix_tb, existing_radio, device_dd,
                               *(c for _, _, c in option_boxes)],
                    [status, summary_md, gallery, table, start_btn, cancel_btn], concurrency_id="captioning",
                    concurrency_limit=1, show_progress="hidden")
    cancel_btn.click(on_cancel, None, status, concurrency_limit=None)
