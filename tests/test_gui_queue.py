"""The run queue in the GUI: the Queue panel's plain functions, and the real GUI in headless Debian chromium with the
fake trainer (tests/fake_trainer.py): runs added with "Add to queue" show in the panel, a waiting one is moved up
and another removed, Start refuses while a queued run trains, the GUI server is killed and the queue's worker
finishes the queue without it, and a GUI started again shows the queue as it is. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json
import os
from html import unescape
import sys
import time
from pathlib import Path

import psutil
import pytest

from gui_server import EVENTS_IN_FLIGHT_JS, running_app, settle
from test_gui_training import ARTIFACTS, REPO, fake_trainer_command, fill, free_port, make_dataset

try:
    from playwright.sync_api import expect
except ImportError:  # the browser test skips; the others still run
    expect = None


def _queue(root: Path) -> list[dict]:
    try:
        return json.loads((root / "queue" / "queue.json").read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(pred, timeout: float = 40.0, what: str = ""):
    deadline = time.time() + timeout
    while not (got := pred()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return got


def test_panel_rows_status_and_actions(tmp_path, monkeypatch):
    from core.config.schema import TrainConfig
    from core.runs import queue as q
    from ui import queue_actions as qp

    monkeypatch.setenv(q.QUEUE_DIR_ENV, str(tmp_path / "queue"))
    assert "The queue is empty" in qp.status_html([], None)
    for name in ("one", "two", "three"):
        q.add(TrainConfig(output_dir=str(tmp_path / "out"), output_name=name, train_data_dir=str(tmp_path)))
    q.update(None, 1, state="failed", message="x" * 300)
    items = q.entries()
    rows = qp.table_rows(items)
    assert [r[:3] + [r[5]] for r in rows] == [["", "1", "one", "Failed"], ["1", "2", "two", "Waiting"],
                                            ["2", "3", "three", "Waiting"]]
    assert rows[0][6] == str(tmp_path / "out" / "one") and len(rows[0][7]) == qp.NOTE_CHARS
    assert qp.pick_choices(items) == [("1 · two (entry 2)", "2"), ("2 · three (entry 3)", "3")]
    paused = qp.status_html(items, None)
    assert "2 waiting" in paused and "the queue is paused" in paused
    assert "worker runs (pid 42)" in qp.status_html(items, {"pid": 42, "note": ""})
    assert "now number 1" in qp.act("up", "3") and [e.name for e in q.waiting(q.entries())] == ["three", "two"]
    assert "only waiting entries" in qp.act("down", "1")
    assert "Choose a waiting run first" in qp.act("remove", None)
    assert "Removed 'two'" in unescape(qp.act("remove", "2")) and q.find(q.entries(), 2).state == "removed"
    assert qp.start_refusal() is None  # nothing of the queue trains
    err, note, run_dir = qp.add_to_queue(TrainConfig(output_dir=str(tmp_path / "out"), output_name="three"), False,
                                         {})
    assert "already in the queue (entry 3, waiting)" in unescape(err) and note == run_dir == ""
    assert "Dropped 2 ended run(s)" in qp.clear_ended() and [e.name for e in q.entries()] == ["three"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("gui_queue")
    (root / "models").mkdir()  # no model of the user's own: the form starts filled in for the demo (toy model)
    make_dataset(root / "data", "10_zqx", 4)
    settings = root / "settings.json"
    settings.write_text(json.dumps({"models_dir": str(root / "models"), "loras_dir": str(root / "out"),
                                    "outputs_dir": str(root / "out")}))
    env = dict(os.environ, LW_TRAINER_CMD=fake_trainer_command(), LW_QUEUE_DIR=str(root / "queue"),
               LW_QUEUE_POLL="0.2", FAKE_STEP_SECONDS="0.02", FAKE_LOAD_SECONDS="0.2",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    yield {"root": root, "settings": settings, "env": env}
    # they outlive the GUI: end ours
    for doc in [root / "queue" / "worker.json", *root.glob("out/*/status.json"), *root.glob("out/*/launch.json")]:
        try:
            p = psutil.Process(json.loads(doc.read_text())["pid"])
            if any(s in " ".join(p.cmdline()) for s in ("fake_trainer.py", "queue_worker")):
                p.kill()
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            pass


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.add_init_script(EVENTS_IN_FLIGHT_JS)
    page.set_default_timeout(20_000)
    page.goto(url)
    page.wait_for_selector("#queue-table")
    return page


def _queue_run(page, name: str) -> None:
    fill(page, "output_name", name)
    page.click("#queue-add-btn")
    expect(page.locator("#action-msg")).to_contain_text(f"Queued '{name}'")


def _panel_shot(page, name: str) -> None:
    """The run column and the Queue panel (a full-page shot of the long form takes seconds)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#queue-accordion").scroll_into_view_if_needed()
    settle(page)
    page.screenshot(path=str(ARTIFACTS / name), animations="disabled")


def _row(page, n: int):
    """The queue table's n-th entry (0 = first); the first [role=row] is the header."""
    return page.locator("#queue-table [role=row]").nth(n + 1)


def test_queue_panel_survives_the_gui(browser, site):
    root = site["root"]
    cmd = [sys.executable, str(REPO / "app.py"), "--settings", str(site["settings"]), "--port"]
    port = free_port()
    from core.config.schema import TrainConfig
    from core.runs import queue as q

    long_run = TrainConfig(pretrained_model_name_or_path="base.safetensors", train_data_dir=str(root / "data"),
                           output_dir=str(root / "out"), output_name="q_long", max_train_steps=100_000)
    q.add(long_run, qdir=root / "queue")  # it trains until the test stops it
    with running_app(cmd + [str(port)], port, root, site["env"]) as (url, proc):
        page = _open(browser, url)
        expect(_row(page, 0)).to_contain_text("q_long")  # queued before the GUI started: its worker is not started
        expect(page.locator("#queue-state")).to_contain_text("the queue is paused")
        expect(page.locator("#queue-resume")).to_be_visible()
        fill(page, "max_train_epochs", 1)  # the demo's 16 pictures, once
        expect(page.locator("#plan-box")).to_contain_text("x 1 epochs")
        _queue_run(page, "q_two")  # Add to queue starts the worker: q_long trains first
        expect(page.locator("#progress")).to_contain_text("q_long")  # no run was in view: the queue's current one
        _queue_run(page, "q_three")
        expect(_row(page, 2)).to_contain_text("q_three")
        expect(_row(page, 1)).to_contain_text("Waiting")
        page.locator("#queue-table").get_by_text("q_three", exact=True).filter(visible=True).first.click()
        expect(page.locator("#queue-pick input")).to_have_value("2 · q_three (entry 3)")
        page.click("#queue-up")
        expect(page.locator("#queue-msg")).to_contain_text("now number 1")
        expect(_row(page, 1)).to_contain_text("q_three")
        expect(_row(page, 2)).to_contain_text("q_two")
        assert [e["name"] for e in _queue(root)] == ["q_long", "q_three", "q_two"]
        page.locator("#queue-table").get_by_text("q_two", exact=True).filter(visible=True).first.click()
        expect(page.locator("#queue-pick input")).to_have_value("2 · q_two (entry 2)")
        page.click("#queue-remove")
        expect(page.locator("#queue-msg")).to_contain_text("Removed 'q_two'")
        expect(_row(page, 2)).to_contain_text("Removed")
        expect(page.locator("#queue-state")).to_contain_text("1 waiting")
        expect(_row(page, 0)).to_contain_text("Training")
        page.click("#start-btn")  # a second training beside the queued one: refused
        expect(page.locator("#form-errors-box")).to_contain_text("'q_long' is training now")
        expect(page.locator("#form-errors-box")).to_contain_text("Add to queue")
        expect(page.locator(".toast-body")).to_have_count(0)  # no gradio error on the way (a choice gone stale)
        _panel_shot(page, "queue_panel.png")
        page.close()

        worker = json.loads((root / "queue" / "worker.json").read_text())["pid"]
        proc.kill()  # the GUI server dies; the queue's worker and its trainer go on
        proc.wait(10)
        assert _alive(worker)
    from core.runs.launch import request

    request(root / "out" / "q_long", "stop")  # what Stop does: the run ends stopped, the queue goes on
    _wait(lambda: [e["state"] for e in _queue(root)] == ["stopped", "completed", "removed"],
          what="the worker to finish the queue without the GUI")
    assert not (root / "out" / "q_two").exists()
    _wait(lambda: not _alive(worker), what="the worker to end once nothing waits")

    port = free_port()
    with running_app(cmd + [str(port)], port, root, site["env"]) as (url, proc):
        page = _open(browser, url)
        for n, text in enumerate(["Stopped", "Completed", "Removed"]):
            expect(_row(page, n)).to_contain_text(text)
        expect(page.locator("#queue-state")).to_contain_text("nothing left to do")
        # a click on a row shows its run
        page.locator("#queue-table").get_by_text("q_three", exact=True).filter(visible=True).first.click()
        expect(page.locator("#progress")).to_contain_text("q_three")
        expect(page.locator("#progress")).to_contain_text("Completed")
        _panel_shot(page, "queue_after_restart.png")
        page.click("#start-btn")  # nothing of the queue trains now: Start starts
        expect(page.locator("#action-msg")).to_contain_text("Started 'my_first_lora'")
        page.close()
