"""What the Captioning tab does, as plain functions (no Gradio): the model choices of a backend, starting one
captioning run in a background thread (one at a time), watching it, and what the page shows at the end.

``start`` gives a running ``Job`` or an ``Outcome`` (what to show instead); ``watch`` yields the progress while
the job runs; ``finish`` says what to show when it is over. The tab (ui.caption_tab) turns these into updates.
"""
from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from core.caption.base import CaptionError, Captioner
from core.caption.run import Progress, Summary, caption_folder, open_rgb, rel

GALLERY_MAX = 24
THUMB = 256
POLL_S = 0.4


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


def model_info(cls: type[Captioner], models_dir: str) -> str:
    """The Model field's help: what it takes and where downloaded folders can go."""
    return f"{cls.model_help}. Downloaded folders can go into {Path(models_dir or 'models') / 'captioners'}."


def typed_options(cls: type[Captioner], options: dict[str, Any]) -> dict[str, Any]:
    """The backend's option values as its options want them (a slider gives 3.0 for an int option)."""
    out = dict(options)
    for opt in cls.options:
        if opt.name in out and opt.kind is int and out[opt.name] is not None:
            out[opt.name] = int(out[opt.name])
    return out


@dataclass
class Outcome:
    """What the page shows when no run is going: the status (None: leave it), the summary, the results."""
    status: str | None
    summary: str
    result: Summary | None = None


def current_job() -> Job | None:
    return _JOB


def start(folder: str, cls: type[Captioner], model: str, prefix: str, existing: str, device: str,
          options: dict[str, Any]) -> Job | Outcome:
    """Start captioning ``folder``: the running Job, or what to show when it cannot start."""
    global _JOB
    folder = (folder or "").strip()
    if not folder:
        return Outcome("", "⚠ Enter the folder of your images first.")
    with _JOB_LOCK:
        if _JOB is not None and _JOB.thread.is_alive():
            return Outcome(None, "⚠ A captioning run is already going: wait for it or cancel it.")
        try:
            captioner = cls(model or "", device=device or "auto", **typed_options(cls, options))
        except CaptionError as e:
            return Outcome("", error_html(str(e)))
        _JOB = Job(folder, captioner, prefix=prefix or "", existing=existing or "skip")
        return _JOB


def watch(job: Job, every: float = POLL_S) -> Iterator[str]:
    """The job's status (HTML), again every ``every`` seconds while it runs."""
    while job.thread.is_alive():
        yield job.status()
        job.thread.join(every)


def finish(job: Job) -> Outcome:
    """What to show once the job is over: its error, or the summary with the final progress bar."""
    job.thread.join()
    if job.error:
        return Outcome("", error_html(job.error))
    s = job.summary
    state = "stopped" if s.cancelled else "failed" if s.failed and not s.captioned else "completed"
    return Outcome(status_html(job.progress, state), summary_markdown(s), s)


def cancel() -> str | None:
    """Ask the running job to stop after its current images: its status (HTML), None when none runs."""
    job = _JOB
    if job is None or not job.thread.is_alive():
        return None
    job.cancel.set()
    return job.status()
