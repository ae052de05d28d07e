"""How a run looks in the GUI: progress HTML, loss data, log text, gallery items, history rows.

Plain functions of core.runs.reader.RunInfo (no gradio), so they are cheap to call every second and easy
to test. "Training complete" appears only for status "completed".
"""
from __future__ import annotations

import html
import time
from pathlib import Path

from core.runs.reader import CONSOLE_LOG, RunInfo, tail_text
from core.runs.steps_plan import StepsPlan

STATUS_WORDS = {
    "running": "Training",
    "completed": "Completed",
    "failed": "Failed",
    "stopped": "Stopped",
    "interrupted": "Interrupted",
}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""


def badge(status: str) -> str:
    return f'<span class="lw-badge lw-{esc(status)}">{esc(STATUS_WORDS.get(status, status))}</span>'


def can_resume(info) -> bool:
    """Resume is offered for a run that has a saved state and ended without finishing: stopped, interrupted, or
    failed because its disk was full (after freeing space it continues; other failures would fail again)."""
    if info is None or not info.resumable:
        return False
    return info.status in ("interrupted", "stopped") or (info.status == "failed" and
                                                          info.message.startswith("Disk full"))


def progress_html(info: RunInfo | None) -> str:
    """The status panel: badge, progress bar with step/total, speed and ETA, and what happened."""
    if info is None:
        return ('<div class="lw-panel lw-empty">No run selected. Choose a preset, fill in the base model and the '
                'training images folder, then press <b>Start training</b>.</div>')
    pct = 100.0 * info.fraction
    head = f'{badge(info.status)} <span class="lw-run-name">{esc(info.name)}</span>'
    bar = (f'<div class="lw-bar" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" aria-valuemax="100">'
           f'<div class="lw-fill lw-{esc(info.status)}" style="width:{pct:.1f}%"></div></div>')
    line = f'<div class="lw-steps">{esc(" · ".join(_step_parts(info)))}{f" ({pct:.0f}%)" if info.total_steps else ""}</div>'
    body = _outcome_html(info)
    if info.status in ("running", "completed", "stopped", "interrupted"):
        body.append(best_html(info))
    if info.warnings and info.status in ("running", "completed", "stopped"):
        body.append('<details class="lw-warnings"><summary>' + f"{len(info.warnings)} warning(s)</summary><ul>"
                    + "".join(f"<li>{esc(w)}</li>" for w in info.warnings[-5:]) + "</ul></details>")
    return (f'<div class="lw-panel" data-status="{esc(info.status)}">{head}{bar}{line}{"".join(body)}'
            f'{_times_html(info)}</div>')


def _step_parts(info: RunInfo) -> list[str]:
    """step / total, epoch / epochs, and while running the speed and the time left."""
    parts = [f"step {info.step} / {info.total_steps}" if info.total_steps else f"step {info.step}"]
    if info.epoch and info.epochs:
        parts.append(f"epoch {info.epoch} / {info.epochs}")
    if info.status == "running":
        if info.it_per_s:
            parts.append(f"{info.it_per_s:.2f} it/s" if info.it_per_s >= 1 else f"{1 / info.it_per_s:.1f} s/it")
        if info.eta_s is not None:
            parts.append(f"ETA {duration(info.eta_s)}")
    return parts


def _outcome_html(info: RunInfo) -> list[str]:
    """What the run is doing or how it ended: its stage, the LoRA written, why it stopped or failed."""
    if info.status == "running":
        return [f'<div class="lw-note">{esc(info.stage[0].upper() + info.stage[1:])}…</div>'] if info.stage else []
    if info.status == "completed":
        return [f'<div class="lw-ok">Training complete. LoRA: <code>{esc(info.lora_path or "?")}</code></div>']
    if info.status == "stopped":
        body = [f'<div class="lw-note">Stopped at step {info.step} on request. '
                + ("Resume continues from the saved state." if info.resumable else "No saved state to resume from.")
                + "</div>"]
        if info.lora_path:
            body.append(f'<div class="lw-note">Last LoRA saved: <code>{esc(info.lora_path)}</code></div>')
        return body
    if info.status == "interrupted":
        return [f'<div class="lw-warn">{esc(info.message)}</div>']
    if info.status == "failed":
        return _failure_html(info)
    return []


def _failure_html(info: RunInfo) -> list[str]:
    code = f" (exit code {info.exit_code})" if info.exit_code is not None else ""
    disk_full = info.message.startswith("Disk full")
    title = "Disk full: training stopped" if disk_full else f"Training failed{code}"
    body = [f'<div class="lw-err"><b>{esc(title)}.</b> '
            + (esc(info.message) if info.message and info.message not in info.error_lines else "") + "</div>"]
    if disk_full and info.resumable:
        body.append('<div class="lw-note">Its last complete state is kept: free some space, then Resume '
                    "continues from it.</div>")
    if info.error_lines:
        body.append('<pre class="lw-errlines">' + esc("\n".join(info.error_lines[-15:])) + "</pre>")
    return body


def _times_html(info: RunInfo) -> str:
    """When it started, how long it trained, and its steps arithmetic."""
    times = []
    if info.started_at:
        times.append(f"started {when(info.started_at)}")
    if info.active_s is not None and info.status != "running":
        times.append(f"trained for {duration(info.active_s)}")
    if info.plan_text:
        times.append(info.plan_text)
    return f'<div class="lw-small">{esc(" · ".join(times))}</div>' if times else ""


def loss_rows(info: RunInfo | None, max_points: int = 600) -> list[dict]:
    """Rows (step, loss, series) for the loss plot: raw loss and its running average, thinned out, and the
    validation loss (every evaluation: few points)."""
    if info is None or not (info.losses or info.val_losses):
        return []
    pts = info.losses
    if len(pts) > max_points:
        stride = len(pts) / max_points
        pts = [pts[int(i * stride)] for i in range(max_points)] + [pts[-1]]
    rows = [{"step": s, "loss": l, "series": "loss"} for s, l, _ in pts]
    rows += [{"step": s, "loss": a, "series": "average"} for s, _, a in pts]
    rows += [{"step": s, "loss": v, "series": "validation"} for s, v in info.val_losses]
    # Every series is in every frame (an empty one as a point without a value, which the plot leaves out): the plot
    # keeps the series of the first frame it drew, for any run shown later, and draws no series added after it.
    series = ("loss", "average", "validation")
    have = {r["series"] for r in rows}
    rows += [{"step": rows[0]["step"], "loss": None, "series": s} for s in series if s not in have]
    return rows


def best_html(info: RunInfo) -> str:
    """The saved file with the lowest validation loss, and the latest validation loss while running."""
    if not info.val_losses:
        return ""
    best = info.best
    parts = []
    if best and best.get("path"):
        word = "Best file" if info.finished else "Best file so far"
        parts.append(f'{word}: <code>{esc(best["path"])}</code> (epoch {esc(best.get("epoch"))}, validation loss '
                     f'{float(best["loss"]):.5f})')
    step, loss = info.val_losses[-1]
    first = info.val_losses[0]
    held = f" on {info.validation_images} image(s)" if info.validation_images else ""
    parts.append(f"validation loss{held} {loss:.5f} at step {step}"
                 + (f" (base model: {first[1]:.5f})" if first[0] == 0 and step != 0 else ""))
    return f'<div class="lw-best">{" · ".join(parts)}</div>'



def log_text(info: RunInfo | None, lines: int = 40) -> str:
    """The end of train.log, or of the trainer's console output when there is no log yet."""
    if info is None:
        return ""
    out = tail_text(Path(info.dir) / "train.log", lines)
    if not out:
        out = tail_text(Path(info.dir) / CONSOLE_LOG, lines)
    return "\n".join(out)


def gallery_items(info: RunInfo | None, limit: int = 48) -> list[tuple[str, str]]:
    """Sample images, newest first, captioned with their step."""
    if info is None:
        return []
    return list(reversed(info.samples))[:limit]


HISTORY_HEADERS = ["Run", "Status", "Steps", "Started", "Duration", "Folder"]


def history_rows(runs: list[RunInfo]) -> list[list[str]]:
    rows = []
    for r in runs:
        steps = f"{r.step} / {r.total_steps}" if r.total_steps else str(r.step)
        took = duration(r.active_s) if r.active_s is not None else ""
        rows.append([r.name, STATUS_WORDS.get(r.status, r.status), steps, when(r.started_at), took, str(r.output_dir or "")])
    return rows


def plan_html(plan: StepsPlan) -> str:
    """The live step arithmetic under the dataset fields, with folder problems in words."""
    if plan.ok:
        main = f'<div class="lw-plan-main"><b>{plan.total_steps} steps</b>: {esc(plan.text)}</div>'
    else:
        main = '<div class="lw-plan-main"><b>No training steps yet.</b></div>'
    probs = "".join(f"<li>{esc(p)}</li>" for p in plan.problems)
    folders = ""
    if plan.folders:
        folders = '<div class="lw-small">' + esc(", ".join(f"{f.name}: {f.images} images x {f.repeats}"
                                                            for f in plan.folders)) + "</div>"
    if plan.masks:
        folders += f'<div class="lw-small" id="plan-masks">{esc(plan.masks)}</div>'
    return (f'<div class="lw-plan" id="steps-plan">{main}{folders}'
            + (f'<ul class="lw-problems">{probs}</ul>' if probs else "") + "</div>")


def errors_html(lines: list[str], title: str = "Fix these settings first:") -> str:
    if not lines:
        return ""
    return (f'<div class="lw-errors" id="form-errors"><b>{esc(title)}</b><ul>'
            + "".join(f"<li>{esc(ln)}</li>" for ln in lines) + "</ul></div>")


def notice_html(text: str, kind: str = "note") -> str:
    return f'<div class="lw-{esc(kind)}">{esc(text)}</div>' if text else ""
