"""The Training tab's Queue panel: the run queue (core/runs/queue.py) as a table, and its controls; what they do
is in queue_actions.py.

Everything is read from the queue folder on every refresh, nothing is kept in the GUI process: closing the
browser or restarting the GUI shows the queue as it is, and the queue's worker runs without the GUI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from core.runs import queue as q
from core.runs.reader import is_run_dir

from .queue_actions import (HEADERS, act, clear_ended, pick_choices, resume_queue, snapshot, status_html,
                            table_rows)

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
        self.timer = gr.Timer(5.0)  # the queue changes rarely; the buttons refresh it at once

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
