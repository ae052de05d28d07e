"""What the Settings tab does, as plain functions (no Gradio): look for ComfyUI / A1111 / Forge models folders,
save the settings (saying which folders are not found now), remove the token, run the system check.

The Hugging Face token is never part of what they return: only whether it is set.
"""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .run_view import esc, notice_html
from .settings import Settings


def has_doctor() -> bool:
    try:
        return importlib.util.find_spec("core.doctor") is not None
    except (ImportError, ValueError):
        return False


def token_line(state: str) -> str:
    return f"Hugging Face token: **{state}**"


def system_line(gradio_version: str) -> str:
    return f"Python {esc(platform.python_version())} · Gradio {esc(gradio_version)} · {esc(sys.executable)}"


def lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def find_model_folders(current: str, models_dir: str, usual: list[str] | None = None) -> tuple[str | None, str]:
    """Add the usual ComfyUI / A1111 / Forge models folders (``usual``: those found on this computer) to the
    "more model folders" text: (the new text, None when nothing was added; the message as Markdown)."""
    if usual is None:
        from core.models.library import usual_folders

        usual = usual_folders()
    have = lines(current)
    new = [f for f in usual if f not in have and f != models_dir]
    if not new:
        return None, "No ComfyUI, AUTOMATIC1111 or Forge models folder was found at the usual places."
    return "\n".join(have + new), (f"Added {len(new)} folder(s) found at the usual places; press **Save "
                                   "settings** to keep them.")


def missing_folders(s: Settings) -> list[str]:
    """The model folders that are not there now (an unplugged drive, a moved folder)."""
    return [f for f in s.model_dirs() if not Path(f).expanduser().is_dir()]


@dataclass
class Saved:
    ok: bool
    message: str  # HTML
    token_line: str = ""  # what the token line says now ("" when the file could not be written)
    missing: list[str] = field(default_factory=list)


def save_settings(s: Settings, models: str, more: str, loras: str, outputs: str, datasets: str,
                  token: str) -> Saved:
    """Put the form's values into ``s`` and write settings.json; an empty token keeps the current one."""
    s.models_dir, s.loras_dir = (models or "").strip(), (loras or "").strip()
    s.outputs_dir, s.datasets_dir = (outputs or "").strip(), (datasets or "").strip()
    s.model_folders = "\n".join(lines(more))
    if token and token.strip():
        s.hf_token = token.strip()
    try:
        s.save()
    except OSError as e:
        return Saved(False, notice_html(f"Cannot write {s.path}: {e}", "err"))
    gone = missing_folders(s)
    note = (f" Not found now (an unplugged drive or a moved folder? skipped until it is back): {', '.join(gone)}."
            if gone else "")
    return Saved(True, notice_html(f"Saved to {s.path}.{note}", "warn" if gone else "note"),
                 token_line(s.token_state), gone)


def clear_token(s: Settings) -> tuple[str | None, str]:
    """Remove the token and save: (the token line, None when the file could not be written; the message)."""
    s.hf_token = ""
    try:
        s.save()
    except OSError as e:
        return None, notice_html(f"Cannot write {s.path}: {e}", "err")
    return token_line(s.token_state), notice_html("The token was removed.")


def doctor_text() -> str:
    """The system check's report; its own failure is reported, never raised (the GUI goes on)."""
    doctor = importlib.import_module("core.doctor")
    try:
        return doctor.doctor_report_text()
    except Exception as e:
        return f"The system check failed: {type(e).__name__}: {e}"
