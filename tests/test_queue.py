"""The run queue (core/runs/queue.py, queue_worker.py, queue_cli.py) with the fake trainer (tests/fake_trainer.py).

The queue's bookkeeping (add, move, remove, clear and their refusals), its lock, the worker (one at a time,
re-attaching to the run a killed worker left, a run that cannot start failing alone), and the command line: three
runs added with `python -m core queue add` train one after another, the middle one failing alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from core.config.schema import TrainConfig
from core.runs import queue as q
from core.runs.launch import command_text, request, start_run
from core.runs.queue_worker import _outside_run, work
from core.runs.reader import RunExistsError, read_run

REPO = Path(__file__).resolve().parent.parent
FAKE = command_text([sys.executable, str(REPO / "tests" / "fake_trainer.py")])


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """A queue folder of its own, the fake trainer (fast), short polls; every process left is ended afterwards."""
    from PIL import Image

    data = tmp_path / "data" / "10_zqx"
    data.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (60 * i, 90, 200)).save(data / f"{i}.png")
    values = {q.QUEUE_DIR_ENV: str(tmp_path / "queue"), "LW_TRAINER_CMD": FAKE, q.POLL_ENV: "0.1",
              "FAKE_STEP_SECONDS": "0.03", "FAKE_LOAD_SECONDS": "0.1", "LW_LOGS": str(tmp_path / "logs")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    yield dict(os.environ)
    _end_processes(tmp_path)


def _end_processes(root: Path) -> None:
    pids = []
    for doc in [root / "queue" / "worker.json", *root.glob("out/*/status.json"), *root.glob("out/*/launch.json")]:
        try:
            pids.append(int(json.loads(doc.read_text())["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if any(s in " ".join(p.cmdline()) for s in ("fake_trainer.py", "queue")):
                p.kill()
        except psutil.Error:
            pass


def config(tmp_path: Path, name: str, steps: int = 5, **kw) -> TrainConfig:
    return TrainConfig(pretrained_model_name_or_path="base.safetensors", train_data_dir=str(tmp_path / "data"),
                       output_dir=str(tmp_path / "out"), output_name=name, max_train_steps=steps, **kw)


def wait_for(pred, timeout: float = 30.0, what: str = ""):
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def states(qdir: Path | None = None) -> dict[str, str]:
    return {e.name: e.state for e in q.entries(qdir)}


# ------------------------------------------------------------------ bookkeeping
def test_add_move_remove_clear_and_their_refusals(env, tmp_path):
    a, b, c = (q.add(config(tmp_path, n)) for n in ("a", "b", "c"))
    assert [a.id, b.id, c.id] == [1, 2, 3] and a.steps == 5 and a.family == "auto"
    assert a.run_dir == str(tmp_path / "out" / "a") and a.state == "waiting"
    saved = (tmp_path / "queue" / "1.toml").read_text()
    assert "output_name = \"a\"" in saved and "max_train_steps = 5" in saved
    with pytest.raises(q.QueueError, match=r"already in the queue \(entry 2, waiting\).*queue remove 2"):
        q.add(config(tmp_path, "b", steps=9))
    assert q.move(3, by=-1) == 2 and [e.name for e in q.entries()] == ["a", "c", "b"]
    assert q.move(2, to=1) == 1 and [e.name for e in q.entries()] == ["b", "a", "c"]
    assert q.move(2, by=-5) == 1  # clamped
    items = q.entries()
    assert [q.position(items, e) for e in items] == [1, 2, 3]
    assert q.remove(1).state == "removed"
    items = q.entries()
    assert [(e.name, e.state, q.position(items, e)) for e in items] == [
        ("b", "waiting", 1), ("a", "removed", None), ("c", "waiting", 2)]
    with pytest.raises(q.QueueError, match="already ended"):
        q.remove(1)
    with pytest.raises(q.QueueError, match="only waiting entries"):
        q.move(1, by=1)
    with pytest.raises(q.QueueError, match="no entry 42.*queue list"):
        q.remove(42)
    q.add(config(tmp_path, "a"))  # a removed entry no longer holds its run folder
    assert [e.name for e in q.clear()] == ["a"] and not (tmp_path / "queue" / "1.toml").exists()
    assert [(e.id, e.name) for e in q.entries()] == [(2, "b"), (3, "c"), (4, "a")]
    assert q.add(config(tmp_path, "d")).id == 5  # ids are never given twice


def test_a_run_folder_that_holds_a_run_is_refused_unless_replaced(env, tmp_path):
    cfg = config(tmp_path, "done", steps=3)
    start_run(cfg).wait(30)
    assert read_run(tmp_path / "out" / "done").status == "completed"
    with pytest.raises(RunExistsError, match="already holds a run named 'done'.*--overwrite"):
        q.add(cfg)
    assert q.entries() == []
    assert q.add(cfg, overwrite=True).overwrite is True


def test_a_broken_queue_file_is_named(env, tmp_path):
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "queue.json").write_text("{ not json")
    with pytest.raises(q.QueueError, match=r"queue\.json cannot be read.*delete it"):
        q.add(config(tmp_path, "a"))


def test_the_lock_is_exclusive_and_ends_with_its_process(env, tmp_path):
    code = ("import sys, time; from core.runs import queue as q\n"
            "with q.locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "queue")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(q.QueueError, match=r"queue\.lock"):
            with q.locked(timeout=0.3):
                pass
    finally:
        holder.kill()  # killed while holding it: the system drops the lock, nothing stale is left
        holder.wait()
    with q.locked(timeout=2.0):
        pass


# ------------------------------------------------------------------ the worker
def test_a_run_that_cannot_start_fails_alone(env, tmp_path, monkeypatch):
    q.add(config(tmp_path, "broken"))
    q.add(config(tmp_path, "fine"))
    (tmp_path / "queue" / "1.toml").write_text("network_dim = 0\n")  # spoilt after it was queued
    said: list[str] = []
    assert work(say=said.append) == 0
    items = q.entries()
    assert [(e.name, e.state) for e in items] == [("broken", "failed"), ("fine", "completed")]
    assert "1.toml cannot be used" in items[0].message and "network_dim" in items[0].message
    assert items[1].started_at >= items[0].ended_at
    assert not (tmp_path / "queue" / "worker.json").exists()
    # a trainer that exits at once (before writing anything): failed, and the queue goes on
    monkeypatch.setenv("LW_TRAINER_CMD", command_text([sys.executable, "-c", "import sys; sys.exit(1)"]))
    q.add(config(tmp_path, "gone"))
    assert work(say=said.append) == 0
    gone = q.entries()[-1]
    assert gone.state == "failed" and "exited before it started (exit code 1)" in gone.message
    assert any("Nothing waits in the queue" in s for s in said)


def test_one_worker_and_a_restarted_worker_reattaches(env, tmp_path):
    q.add(config(tmp_path, "long", steps=60))  # about 2 s
    q.add(config(tmp_path, "next", steps=3))
    pid, started = q.ensure_worker(env=env)
    assert started
    run = tmp_path / "out" / "long"
    wait_for(lambda: read_run(run).step >= 3, what="the first queued run to train")
    said: list[str] = []
    assert work(say=said.append) == 0 and "already running (pid" in said[0]  # a second worker attaches
    assert q.ensure_worker(env=env) == (pid, False)
    launch = json.loads((run / "launch.json").read_text())
    psutil.Process(pid).kill()  # the worker dies; its trainer (a session of its own) goes on
    wait_for(lambda: q.worker_info() is None, what="the killed worker to be gone")
    assert read_run(run).status == "running" and states()["long"] == "running"
    pid2, started = q.ensure_worker(env=env)
    assert started and pid2 != pid
    wait_for(lambda: states() == {"long": "completed", "next": "completed"}, what="the queue to finish")
    assert json.loads((run / "launch.json").read_text()) == launch  # waited for it, did not start it again
    assert (run / "console.log").read_text().count("=== ") == 1
    log = (tmp_path / "queue" / "worker.log").read_text()
    assert "its run was started by an earlier worker" in log
    items = q.entries()
    assert items[1].started_at >= items[0].ended_at


def test_the_worker_waits_for_a_training_started_outside_the_queue(env, tmp_path):
    outside = start_run(config(tmp_path, "by_hand", steps=200))
    try:
        q.add(config(tmp_path, "queued"))
        d = tmp_path / "queue"
        wait_for(lambda: _outside_run(d) is not None and _outside_run(d).name == "by_hand", what="the outside run")
        request(tmp_path / "out" / "by_hand", "stop")
        outside.wait(30)
        assert _outside_run(d) is None
    finally:
        outside.kill()


# ------------------------------------------------------------------ the command line
def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "queue", *args], cwd=cwd, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)


def test_three_runs_from_the_cli_train_one_after_another(env, tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "run.toml"
    toml.write_text('pretrained_model_name_or_path = "base.safetensors"\ntrain_data_dir = "data"\n'
                    'output_dir = "out"\noutput_name = "first"\nmax_train_steps = 30\n')
    first = cli("add", "--config", str(toml), env=env, cwd=tmp_path)
    assert first.returncode == 0 and "Queued 'first' as entry 1" in first.stdout, first.stderr
    assert "Started the queue worker" in first.stdout
    middle = cli("add", "--config", str(toml), "--set", "output_name=middle", "--set",
                 "training_comment=fake-fail-at-load", env=env, cwd=tmp_path)
    assert middle.returncode == 0, middle.stderr
    bad = main(["queue", "add", "--config", str(toml), "--set", "output_name=bad", "--set", "network_dim=0"])
    said = capsys.readouterr().err
    assert bad == 2 and "network_dim = '0'" in said and "nothing was queued" in said
    last = cli("add", "--config", str(toml), "--set", "output_name=last", env=env, cwd=tmp_path)
    assert last.returncode == 0, last.stderr
    toml.write_text(toml.read_text().replace("max_train_steps = 30", "max_train_steps = 2"))  # too late: saved
    wait_for(lambda: all(s != "waiting" and s != "running" for s in states(tmp_path / "queue").values()),
             timeout=60, what="the queue to finish")
    assert main(["queue", "list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["name"], e["state"]) for e in entries] == [
        (1, "first", "completed"), (2, "middle", "failed"), (3, "last", "completed")]
    assert entries[0]["run_dir"] == str(tmp_path / "out" / "first")
    assert "not found (fake)" in entries[1]["message"]
    for before, after in zip(entries, entries[1:]):  # one after another, never two at once
        assert before["ended_at"] <= after["started_at"], (before, after)
    first_end = read_run(tmp_path / "out" / "first").ended_at
    last_events = [json.loads(x) for x in (tmp_path / "out" / "last" / "events.jsonl").read_text().splitlines()]
    assert first_end <= last_events[0]["time"]
    assert read_run(tmp_path / "out" / "last").total_steps == 30  # as queued, not as the TOML says now
    assert main(["queue", "list"]) == 0
    table = capsys.readouterr().out
    assert "middle" in table and "failed" in table and "entry 2: Cannot load the base model" in table
    assert main(["queue", "remove", "1"]) == 2
    assert "has already ended (completed)" in capsys.readouterr().err
