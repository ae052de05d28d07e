"""The Training tab's Queue panel: the run queue (core/runs/queue.py) as a table, and its controls.

Everything is read from the queue folder on every refresh, nothing is kept in the GUI process: closing the
browser or restarting the GUI shows the queue as it is, and the queue's worker runs without the GUI. The plain
functions (rows, status line, choices, actions) take and return values, so they are tested without a browser.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from core.config.schema import TrainConfig
from core.runs import queue as q
from core.runs.reader import RunExistsError, is_run_dir

from . import run_view

HEADERS = ["#", "ID", "Name", "Family", "Steps", "State", "Run folder", "Note"]
STATE_WORDS = {"waiting": "Waiting", "running": "Training", "completed": "Completed", "failed": "Failed",
               "stopped": "Stopped", "interrupted": "Interrupted", "removed": "Removed"}
NOTE_CHARS = 120


# --------------------------------------------------------------------------- plain functions
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


# --------------------------------------------------------------------------- the panel
class QueuePanel:
    def build(self) -> None:
        with gr.Accordion("Queue", open=True, elem_id="queue-accordion"):
            self.status = gr.HTML(status_html([], None), elem_id="queue-status")
            self.table = gr.Dataframe(value=[], headers=HEADERS, interactive=False, elem_id="queue-table",
                                      max_height=260, wrap=True)
            with gr.Row(equal_height=False):
                # allow_custom_value: a value the last refresh took out of the choices (it started, it was removed)
                # is not refused by gradio before act() can say what became of it
                self.pick = gr.Dropdown(choices=[], value=None, label="Waiting run", elem_id="queue-pick", scale=3,
                                        allow_custom_value=True)
                self.up = gr.Button("Move up", elem_id="queue-up", scale=1)
                self.down = gr.Button("Move down", elem_id="queue-down", scale=1)
                self.remove = gr.Button("Remove", variant="stop", elem_id="queue-remove", scale=1)
                self.resume = gr.Button("Resume the queue", variant="primary", visible=False, elem_id="queue-resume",
                                        scale=1)
                self.clear = gr.Button("Clear ended", elem_id="queue-clear", scale=1)
            self.msg = gr.HTML("", elem_id="queue-msg")
        self.ids = gr.State([])  # entry ids in table order
        self.sig = gr.State(None)
        self.timer = gr.Timer(2.5)  # the queue changes rarely; the buttons refresh it at once

    def refresh(self, sig: Any, picked: str | None):
        """New values for the panel, or skips where nothing changed (a table redrawn every second loses the
        reader's place)."""
        items, worker, status = snapshot()
        rows = table_rows(items)
        choices = pick_choices(items)
        alive = worker is not None
        new_sig = (tuple(map(tuple, rows)), status)
        if new_sig == sig:
            return (sig,) + (gr.skip(),) * 5
        ids = [e.id for e in items]
        keep = picked if picked in [c[1] for c in choices] else None
        paused = not alive and any(e.state in ("waiting", "running") for e in items)
        return (new_sig, rows, ids, status, gr.update(choices=choices, value=keep), gr.update(visible=paused))

    def outputs(self) -> list:
        return [self.sig, self.table, self.ids, self.status, self.pick, self.resume]

    def refresh_after(self, event) -> None:
        """Redraw the panel after ``event`` (a button's click)."""
        event.then(lambda: None, None, [self.sig], show_progress="hidden").then(
            self.refresh, [self.sig, self.pick], self.outputs(), show_progress="hidden")

    def wire(self, env, viewed_run, view_sig, show_run: tuple) -> None:
        """Timer, buttons, and a click on a row: its run in the live view (``show_run``: fn, inputs, outputs of the
        Training tab's refresh), and a waiting entry chosen for Move / Remove."""
        quiet = {"show_progress": "hidden"}
        self.timer.tick(self.refresh, [self.sig, self.pick], self.outputs(), **quiet)
        for btn, kind in ((self.up, "up"), (self.down, "down"), (self.remove, "remove")):
            self.refresh_after(btn.click(lambda p, k=kind: act(k, p), [self.pick], [self.msg]))
        self.refresh_after(self.resume.click(lambda: resume_queue(env()), None, [self.msg]))
        self.refresh_after(self.clear.click(clear_ended, None, [self.msg]))

        def on_select(ids: list[int], evt: gr.SelectData):
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if not (ids and isinstance(row, int) and 0 <= row < len(ids)):
                return gr.skip(), gr.skip(), gr.skip()
            try:
                e = q.find(q.entries(), ids[row])
            except q.QueueError:
                return gr.skip(), gr.skip(), gr.skip()
            pick = str(e.id) if e.state == "waiting" else gr.skip()
            if is_run_dir(Path(e.run_dir)):
                return pick, str(Path(e.run_dir).resolve()), {}
            return pick, gr.skip(), gr.skip()

        self.table.select(on_select, [self.ids], [self.pick, viewed_run, view_sig]).then(*show_run, **quiet)
