"""What the Training tab's Queue panel does, as plain functions of the run queue (core/runs/queue.py): its rows,
status line, choices and actions take and return values (HTML, lists), so they are tested without a browser.
Everything is read from the queue folder each time: nothing is kept in the GUI process."""
from __future__ import annotations

from typing import Any

from core.config.schema import TrainConfig
from core.runs import queue as q
from core.runs.reader import RunExistsError

from . import run_view

HEADERS = ["#", "ID", "Name", "Family", "Steps", "State", "Run folder", "Note"]
STATE_WORDS = {"waiting": "Waiting", "running": "Training", "completed": "Completed", "failed": "Failed",
               "stopped": "Stopped", "interrupted": "Interrupted", "removed": "Removed"}
NOTE_CHARS = 120


def table_rows(items: list[q.Entry]) -> list[list[str]]:
    """One row per entry, in queue order: position among the waiting runs (1 = next), id, name, family, steps,
    state, run folder, and why it failed or stopped."""
    rows = []
    for e in items:
        pos = q.position(items, e)
        note = e.message if len(e.message) <= NOTE_CHARS else e.message[:NOTE_CHARS - 1] + "…"
        rows.append([str(pos or ""), str(e.id), e.name, e.family or "", str(e.steps or ""),
                     STATE_WORDS.get(e.state, e.state), e.run_dir, note])
    return rows


def status_html(items: list[q.Entry], worker: dict[str, Any] | None) -> str:
    """One line: how many wait, which one trains, and whether the worker runs."""
    n = len(q.waiting(items))
    running = [e for e in items if e.state == "running"]
    if not items:
        text = ("The queue is empty. <b>Add to queue</b> (beside Start) queues the form's run: queued runs train "
                "one after another, also with this page or the GUI closed.")
        return f'<div class="lw-small" id="queue-state">{text}</div>'
    parts = [f"{n} waiting"]
    if running:
        parts.insert(0, f"training: {run_view.esc(running[0].name)}")
    if worker:
        tail = f"the queue's worker runs (pid {worker['pid']})"
        if worker.get("note"):
            tail += f": {run_view.esc(worker['note'])}"
    elif n or running:
        tail = ("<b>the queue is paused</b>: no worker runs (the computer restarted, or it was ended). "
                "<b>Resume the queue</b> continues it")
    else:
        tail = "nothing left to do"
    return (f'<div class="lw-small" id="queue-state">{"; ".join(parts)}; {tail}. Click a row to view its run.'
            "</div>")


def pick_choices(items: list[q.Entry]) -> list[tuple[str, str]]:
    """The waiting entries for the Move / Remove controls: ("1 · name (entry 7)", "7")."""
    ws = q.waiting(items)
    return [(f"{i} · {e.name} (entry {e.id})", str(e.id)) for i, e in enumerate(ws, 1)]


def act(kind: str, entry_id: str | None) -> str:
    """Move up / move down / remove a waiting entry; the outcome as notice HTML."""
    if not entry_id:
        return run_view.notice_html("Choose a waiting run first (click its row, or pick it in the list).", "warn")
    try:
        if kind == "remove":
            e = q.remove(entry_id)
            return run_view.notice_html(f"Removed '{e.name}' from the queue.")
        new = q.move(entry_id, by=-1 if kind == "up" else 1)
        return run_view.notice_html(f"Entry {entry_id} is now number {new} of the waiting runs.")
    except q.QueueError as e:
        return run_view.notice_html(str(e), "err")


def add_to_queue(cfg: TrainConfig, overwrite: bool, env: dict[str, str]) -> tuple[str, str, str]:
    """Queue a checked config and make sure a worker runs: (errors HTML, notice HTML, the run folder of the queued
    run that trains now or starts next, "" on an error)."""
    try:
        entry = q.add(cfg, overwrite=overwrite)
        items = q.entries()
        pos = q.position(items, q.find(items, entry.id))
        pid, started = q.ensure_worker(env=env)
    except (RunExistsError, q.QueueError, OSError) as e:
        return run_view.errors_html([str(e)], "Cannot queue:"), "", ""
    when = "it starts now" if started and pos == 1 else f"number {pos} of the waiting runs"
    current = next((e for e in items if e.state == "running"), None) or (q.waiting(items) or [entry])[0]
    return "", run_view.notice_html(f"Queued '{entry.name}' ({when})."), current.run_dir


def start_refusal(resume: bool = False) -> str | None:
    """Why Start (or Resume) must not start a training now: a queued run trains, and two trainings on one GPU run
    out of memory."""
    e = q.running_training()
    if e is None:
        return None
    what = "Resume this run once the queue is done" if resume else "Press 'Add to queue' to train this one after it"
    return (f"The queued run '{e.name}' is training now, and two trainings at once usually run out of GPU memory. "
            f"{what}, or stop the queued run first.")


def resume_queue(env: dict[str, str]) -> str:
    items = q.entries()
    if not q.waiting(items) and not any(e.state == "running" for e in items):
        return run_view.notice_html("Nothing waits in the queue.", "warn")
    pid, started = q.ensure_worker(env=env)
    return run_view.notice_html(f"The queue goes on (worker pid {pid})." if started else
                                f"The queue's worker already runs (pid {pid}).")


def clear_ended() -> str:
    try:
        gone = q.clear()
    except q.QueueError as e:
        return run_view.notice_html(str(e), "err")
    return run_view.notice_html(f"Dropped {len(gone)} ended run(s) from the list (their run folders stay).")


def snapshot() -> tuple[list[q.Entry], dict[str, Any] | None, str]:
    """The entries, the live worker and the status line; a broken queue.json is said on the status line."""
    worker = q.worker_info()
    try:
        items = q.entries()
    except q.QueueError as e:
        return [], worker, run_view.notice_html(str(e), "err")
    return items, worker, status_html(items, worker)
