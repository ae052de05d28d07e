"""The Training tab's behaviour without a browser (ui/training_actions.py, ui/run_view.py): the checks before a
start, config files, start / queue / request / resume on tiny run folders written here, and what the live view
sends on each refresh. No training runs: a start that would launch one is replaced by a recorder."""
from __future__ import annotations

import html
import json
import math
import struct
import time
from pathlib import Path

import psutil
import pytest

from core.config.schema import TrainConfig
from core.config.toml_io import save_config
from ui import run_view
from ui import training_actions as actions

DATA = Path(__file__).parent / "data"


# ------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def own_queue(tmp_path, monkeypatch):
    """An empty queue folder of the test's own (Start asks the queue whether a queued run trains)."""
    monkeypatch.setenv("LW_QUEUE_DIR", str(tmp_path / "queue"))


def safetensors(path: Path, shapes: dict[str, tuple]) -> Path:
    """A safetensors file of zeros with these tensor names and shapes (the model detection reads only headers)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def dataset(root: Path, n: int = 4) -> Path:
    (root / "10_zqx").mkdir(parents=True)
    for i in range(n):
        (root / "10_zqx" / f"{i}.png").write_bytes(b"")  # counted, never opened
        (root / "10_zqx" / f"{i}.txt").write_text("zqx, a square")
    return root


def write_run(run_dir: Path, status: str = "completed", steps: int = 5, started: float | None = None,
              pid: int = 1) -> Path:
    """A run folder as the trainer leaves it: events.jsonl and status.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = started if started is not None else time.time() - 1000
    events = [{"type": "start", "pid": pid, "resumed": False, "step": 0}]
    events += [{"type": "step", "step": i, "total_steps": 10, "epoch": 1, "loss": 0.3 - i / 100, "avg_loss": 0.3}
               for i in range(1, steps + 1)]
    if status != "running":
        events.append({"type": "end", "status": status, "exit_code": 0 if status == "completed" else 1,
                       "message": "Training complete" if status == "completed" else "stopped"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps({"time": t0 + i, **e}) + "\n"
                                                  for i, e in enumerate(events)))
    (run_dir / "status.json").write_text(json.dumps({"pid": pid, "status": status, "step": steps, "total_steps": 10,
                                                     "started_at": t0, "updated_at": t0 + 7,
                                                     "exit_code": 0 if status == "completed" else None}))
    return run_dir


def running_run(run_dir: Path) -> Path:
    """A run whose trainer is alive: this test process stands in for it."""
    me = psutil.Process()
    return write_run(run_dir, "running", steps=3, started=me.create_time() + 1, pid=me.pid)


def good_config(tmp_path: Path, name: str = "zqx") -> TrainConfig:
    base = tmp_path / "models" / "base.safetensors"
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_bytes(b"not a model: nothing here reads it")
    return TrainConfig(pretrained_model_name_or_path=str(base), train_data_dir=str(dataset(tmp_path / "data")),
                       output_dir=str(tmp_path / "out"), output_name=name)


# ------------------------------------------------------------------ checks before a start
def test_start_problems_name_what_is_missing(tmp_path):
    cfg = good_config(tmp_path)
    assert actions.start_problems(cfg) == []

    empty_base = cfg.model_copy(update={"pretrained_model_name_or_path": " "})
    problems = actions.start_problems(empty_base)
    assert len(problems) == 1 and "Base model (pretrained_model_name_or_path) is empty" in problems[0]

    flux = safetensors(tmp_path / "models" / "flux1-dev.safetensors",
                       {"double_blocks.0.img_attn.qkv.weight": (9, 3), "guidance_in.in_layer.bias": (3,),
                        "txt_in.weight": (3, 4096)})
    problems = actions.start_problems(cfg.model_copy(update={"pretrained_model_name_or_path": str(flux),
                                                             "clip_l": "/x/clip_l.safetensors"}))
    text = "\n".join(problems)
    assert "holds only the transformer" in text
    assert "`t5xxl`" in text and "`ae`" in text and "`clip_l`" not in text  # the settings still empty, by name

    (tmp_path / "empty").mkdir()
    problems = actions.start_problems(cfg.model_copy(update={"train_data_dir": str(tmp_path / "empty")}))
    assert problems == [f"Training images folder {tmp_path / 'empty'} is empty: add a sub-folder such as '10_zqx' "
                        "with your images."]
    assert actions.plan_of(cfg.model_copy(update={"train_data_dir": str(tmp_path / "empty")})).count(
        "No training steps yet") == 1
    assert "400 steps" in actions.plan_of(cfg)  # 4 images x 10 repeats x 10 epochs / batch 1


def test_start_refuses_an_existing_run_and_says_to_tick_replace(tmp_path, monkeypatch):
    cfg = good_config(tmp_path, "old_run")
    write_run(tmp_path / "out" / "old_run", "completed")
    remembered: list[str] = []
    err, run_dir, note = actions.start(cfg, False, {}, remembered.append)
    err = html.unescape(err)
    assert "Cannot start:" in err and "already holds a run named 'old_run'" in err
    assert "Tick 'Replace an existing run with the same output name'" in err
    assert run_dir == "" and note == "" and remembered == []

    started: list[tuple] = []  # replacing it would launch the trainer: record the call instead
    monkeypatch.setattr(actions.launch, "start_run", lambda c, **kw: started.append((c.output_name, kw)))
    err, run_dir, note = actions.start(cfg, True, {"HF_TOKEN": "t"}, remembered.append)
    assert err == "" and run_dir == str((tmp_path / "out" / "old_run").resolve())
    assert note == run_view.notice_html("Started 'old_run'.")
    assert started == [("old_run", {"overwrite": True, "env": {"HF_TOKEN": "t"}})]
    assert remembered == [str(tmp_path / "out")]

    err, run_dir, _ = actions.start(cfg.model_copy(update={"pretrained_model_name_or_path": ""}), True, {})
    assert "Cannot start yet:" in err and run_dir == "" and len(started) == 1
    err, note, run_dir = actions.queue(cfg.model_copy(update={"pretrained_model_name_or_path": ""}), True, {})
    assert "Cannot queue yet:" in err and note == "" and run_dir == ""


def test_start_and_resume_wait_for_a_queued_run_that_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(actions.queue_actions, "start_refusal",
                        lambda resume=False: "The queued run 'q' is training now" + (" (resume)" if resume else ""))
    err, run_dir, _ = actions.start(good_config(tmp_path), False, {})
    assert "Cannot start now:" in err and "The queued run 'q' is training now" in html.unescape(err) and run_dir == ""
    note = actions.resume(str(write_run(tmp_path / "out" / "r", "stopped")), {})
    assert note == run_view.notice_html("The queued run 'q' is training now (resume)", "err")


# ------------------------------------------------------------------ config files and presets
def test_loading_config_files_names_the_file(tmp_path):
    toml = tmp_path / "mine.toml"
    save_config(TrainConfig(output_name="from_toml", network_dim=8), toml)
    cfg, note = actions.load_config_file(str(toml))
    assert cfg.output_name == "from_toml" and cfg.network_dim == 8
    assert note == run_view.notice_html("Loaded mine.toml.")

    cfg, note = actions.load_config_file(str(DATA / "kohya_gui_sd15_locon.json"))
    assert cfg.output_name == "zqx_dog_v1" and cfg.pretrained_model_name_or_path == "runwayml/stable-diffusion-v1-5"
    assert "Loaded kohya_gui_sd15_locon.json." in note and '<pre class="lw-errlines">' in note  # what it converted

    broken = tmp_path / "broken.toml"
    broken.write_text("network_dim = [oops\n")
    cfg, note = actions.load_config_file(str(broken))
    assert cfg is None and "broken.toml could not be loaded:" in note and 'class="lw-errors"' in note

    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text("network_dim = 0\n")
    cfg, note = actions.load_config_file(str(bad_value))
    assert cfg is None and "bad_value.toml could not be loaded:" in note and "network_dim" in note

    assert actions.load_config_file("") == (None, "")


def test_export_writes_the_config_as_toml(tmp_path):
    from core.config.toml_io import load_config

    path = Path(actions.export_config(TrainConfig(output_name="exported", network_dim=12)))
    assert path.name == "exported.toml" and load_config(path).network_dim == 12


def test_apply_preset(tmp_path):
    from core.config import presets as presets_mod

    assert actions.apply_preset("", {}, {}) == (None, "", None)
    fill, note, own = actions.apply_preset("No such preset", {}, {})
    assert fill is None and own is None and 'class="lw-err"' in note
    pr = presets_mod.list_presets()[0]
    data = TrainConfig(output_name="mine", network_dim=3).model_dump()
    fill, desc, own = actions.apply_preset(pr.label, {}, data)
    assert desc == pr.description and "output_name" not in fill  # the user's own field stays as it is
    assert fill["network_dim"] == pr.values.get("network_dim", TrainConfig().network_dim)  # the rest: reset
    assert all(fill[k] == v for k, v in pr.values.items())
    assert own == {k: v for k, v in pr.values.items() if k in presets_mod.own_fields()}


# ------------------------------------------------------------------ control of a run
def test_request_on_a_run_that_is_not_training(tmp_path):
    done = write_run(tmp_path / "out" / "done", "completed")
    for kind in ("stop", "sample", "save"):
        assert actions.request(kind, str(done)) == run_view.notice_html("This run is not training.", "warn")
    assert actions.request("stop", "") == run_view.notice_html("This run is not training.", "warn")
    assert not (done / "control").exists()

    live = running_run(tmp_path / "out" / "live")
    assert actions.request("sample", str(live)) == run_view.notice_html(actions.REQUEST_NOTES["sample"])
    assert (live / "control" / "sample").is_file()


def test_resume_and_copy_settings_of_a_run(tmp_path, monkeypatch):
    assert actions.resume("", {}) == run_view.notice_html("Select a run first.", "warn")
    run = write_run(tmp_path / "out" / "broken", "stopped")
    (run / "config.toml").write_text("network_dim = [oops\n")
    note = actions.resume(str(run), {})
    assert "The run's config.toml cannot be used:" in html.unescape(note)
    assert f"{run / 'config.toml'}: not valid TOML" in note
    cfg, note = actions.use_config(str(run))
    assert cfg is None and "The run's config.toml cannot be used:" in html.unescape(note)

    save_config(TrainConfig(output_dir="/somewhere/else", output_name="other", network_dim=6), run / "config.toml")
    note = actions.resume(str(run), {})  # no saved state: says so, launches nothing
    assert 'class="lw-err"' in note and "Nothing to resume" in note
    cfg, note = actions.use_config(str(run))
    assert (cfg.output_dir, cfg.output_name, cfg.network_dim) == (str(run.parent), "broken", 6)
    assert note == run_view.notice_html("Loaded the settings of 'broken' into the form.")

    calls, remembered = [], []
    monkeypatch.setattr(actions.launch, "start_run", lambda c, **kw: calls.append((c.output_name, kw)))
    note = actions.resume(str(run), {"A": "1"}, remembered.append)
    assert note == run_view.notice_html("Resuming 'broken' from its saved state.")
    assert calls == [("broken", {"resume": True, "env": {"A": "1"}})] and remembered == [str(run.parent)]


# ------------------------------------------------------------------ the live view
def test_changes_sends_only_what_changed():
    made: list[str] = []

    def part(key, sig_value):
        return sig_value, lambda: made.append(key) or f"{key}={sig_value}"

    sig, out = actions.changes({}, {"a": part("a", 1), "b": part("b", 2)})
    assert out == {"a": "a=1", "b": "b=2"} and sig == {"a": 1, "b": 2} and made == ["a", "b"]
    sig2, out = actions.changes(sig, {"a": part("a", 1), "b": part("b", 3)})
    assert out == {"a": actions.SKIP, "b": "b=3"} and sig2 == {"a": 1, "b": 3}
    assert made == ["a", "b", "b"]  # an unchanged part is not even made
    assert sig == {"a": 1, "b": 2}  # the old signatures are not changed in place
    _, out = actions.changes(None, {"a": part("a", 1)})
    assert out == {"a": "a=1"}


def test_live_view_of_a_run(tmp_path):
    run = write_run(tmp_path / "out" / "zqx", "completed")
    sig, parts, dirs, info = actions.live_view(str(run), {}, [str(tmp_path / "out")], now=100.0)
    assert info.name == "zqx" and dirs == [str(run)]
    assert "Training complete." in parts["progress"] and "zqx" in parts["progress"]
    assert {r["series"] for r in parts["plot"]} == {"loss", "average", "validation"}
    assert parts["buttons"].visible == (False, False, False, False, True)
    assert parts["history"] == [["zqx", "Completed", "5 / 10", run_view.when(info.started_at),
                                 parts["history"][0][4], str(run.parent)]]
    assert parts["gallery"] == [] and parts["log"] == ""

    sig2, parts, _, _ = actions.live_view(str(run), sig, [str(tmp_path / "out")], now=101.0)
    assert all(v is actions.SKIP for v in parts.values()), parts  # nothing changed: nothing sent
    _, parts, _, _ = actions.live_view(str(run), sig2, [str(tmp_path / "out")], now=150.0)
    assert parts["history"] is actions.SKIP  # nothing trains: no duration grows, the table is not redrawn

    (run / "train.log").write_text("line 1\nline 2\n")
    _, parts, _, _ = actions.live_view(str(run), sig2, [str(tmp_path / "out")], now=101.0)
    assert parts["log"] == "line 1\nline 2" and parts["progress"] is actions.SKIP

    _, parts, dirs, info = actions.live_view("", sig, [str(tmp_path / "out")], now=101.0)
    assert info is None and parts["progress"] == run_view.progress_html(None)
    assert parts["buttons"].visible == (False,) * 5 and parts["plot"] == [] and dirs == [str(run)]


def test_live_view_of_a_training_run_redraws_its_plot_and_history_now_and_then(tmp_path):
    """The loss plot takes new losses at most every PLOT_SECONDS while the run trains (the browser redraws it
    whole: every second it took a core from the training), the history's durations every HISTORY_SECONDS; the
    progress every second."""
    out = tmp_path / "out"
    live = running_run(out / "live")
    sig, parts, _, _ = actions.live_view(str(live), {}, [str(out)], now=1000.0)
    assert len([r for r in parts["plot"] if r["series"] == "loss"]) == 3 and parts["history"] != actions.SKIP
    assert parts["timer"] == actions.LIVE_SECONDS  # asked often while it trains

    def add_step(step: int) -> None:
        with open(live / "events.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "type": "step", "step": step, "total_steps": 10, "epoch": 1,
                                "loss": 0.1, "avg_loss": 0.2}) + "\n")

    add_step(4)
    sig, parts, _, _ = actions.live_view(str(live), sig, [str(out)], now=1001.0)
    assert parts["plot"] is actions.SKIP and "step 4 / 10" in parts["progress"]  # the progress at once
    assert parts["history"] is actions.SKIP
    sig, parts, _, _ = actions.live_view(str(live), sig, [str(out)], now=1000.0 + actions.PLOT_SECONDS)
    assert [r["step"] for r in parts["plot"] if r["series"] == "loss"] == [1, 2, 3, 4]  # its time has come
    add_step(5)
    sig, parts, _, _ = actions.live_view(str(live), sig, [str(out)], now=1006.0)
    assert parts["plot"] is actions.SKIP
    sig, parts, _, _ = actions.live_view(str(live), sig, [str(out)], now=1000.0 + actions.HISTORY_SECONDS)
    assert parts["history"] != actions.SKIP and parts["plot"] != actions.SKIP
    # the run ends: its last losses are drawn at once
    add_step(6)
    with open(live / "events.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), "type": "end", "status": "completed", "exit_code": 0,
                            "message": "Training complete"}) + "\n")
    _, parts, _, info = actions.live_view(str(live), sig, [str(out)], now=1011.0)
    assert info.status == "completed" and [r["step"] for r in parts["plot"] if r["series"] == "loss"][-1] == 6
    assert parts["timer"] == actions.IDLE_SECONDS  # nothing trains: asked now and then (a run started elsewhere)


def test_live_view_buttons_of_a_running_and_a_resumable_run(tmp_path):
    live = running_run(tmp_path / "out" / "live")
    _, parts, _, _ = actions.live_view(str(live), {}, [])
    assert parts["buttons"].visible == (True, True, True, False, True) and "Training" in parts["progress"]
    stopped = write_run(tmp_path / "out" / "stopped", "stopped")
    (stopped / "state").mkdir()
    (stopped / "state" / "trainer.json").write_text("{}")
    (stopped / "state" / "lora.safetensors").write_bytes(b"x")
    _, parts, _, _ = actions.live_view(str(stopped), {}, [])
    assert parts["buttons"].visible == (False, False, False, True, True)
    assert "Resume continues from the saved state." in parts["progress"]


def test_a_page_load_shows_the_running_run_first(tmp_path):
    out = tmp_path / "out"
    assert actions.pick_run([str(out)]) == ""
    write_run(out / "older_done", "completed", started=time.time() - 5000)
    newest = write_run(out / "newest_done", "completed", started=time.time() - 10)
    assert actions.pick_run([str(out)]) == str(newest)
    live = running_run(out / "live")  # started before the others (this process is older): still first
    assert actions.pick_run([str(out)]) == str(live)
    assert actions.pick_run([str(tmp_path / "missing"), str(out)]) == str(live)


def test_history_pick():
    dirs = ["/a", "/b"]
    assert actions.history_pick(dirs, [1, 3]) == "/b" and actions.history_pick(dirs, 0) == "/a"
    assert actions.history_pick(dirs, 2) is None and actions.history_pick([], 0) is None
    assert actions.history_pick(dirs, None) is None


# ------------------------------------------------------------------ lists and the first form
def test_model_choices_and_base_model_labels(tmp_path):
    models = tmp_path / "models"
    safetensors(models / "flux1-dev.safetensors", {"double_blocks.0.img_attn.qkv.weight": (9, 3),
                                                   "guidance_in.in_layer.bias": (3,), "txt_in.weight": (3, 4096)})
    (models / "pipe").mkdir()
    (models / "pipe" / "model_index.json").write_text("{}")
    (models / "sub").mkdir()
    (models / "sub" / "b.ckpt").write_bytes(b"")
    (models / "notes.txt").write_text("")
    assert actions.model_choices(str(models)) == [str(models / "flux1-dev.safetensors"), str(models / "pipe"),
                                                  str(models / "sub" / "b.ckpt")]
    assert actions.model_choices(str(tmp_path / "missing")) == []
    labels = dict((path, label) for label, path in actions.base_model_choices([str(models)]))
    label = labels[str(models / "flux1-dev.safetensors")]
    assert label.startswith("Flux") and "flux1-dev.safetensors" in label and "needs" in label


def test_the_tab_module_keeps_its_names():
    from ui import training_tab

    for name in ("base_model_choices", "part_choices", "starting_form", "STARTER_NOTE"):
        assert getattr(training_tab, name) is getattr(actions, name)


def test_progress_panel_of_a_failed_disk_full_run(tmp_path):
    from core.runs.reader import RunInfo

    info = RunInfo(name="r", dir=tmp_path, status="failed", step=4, total_steps=10, resumable=True,
                   message="Disk full while writing x", error_lines=["Traceback", "OSError"], exit_code=1)
    panel = run_view.progress_html(info)
    assert "Disk full: training stopped." in panel and "exit code" not in panel
    assert "free some space, then Resume" in panel and "Traceback\nOSError" in panel
    assert 'style="width:40.0%"' in panel and "step 4 / 10 (40%)" in panel
    running = RunInfo(name="r", dir=tmp_path, status="running", step=0, it_per_s=0.5, eta_s=61, stage="loading")
    panel = run_view.progress_html(running)
    assert "step 0 · 2.0 s/it · ETA 1 min 01 s" in panel and "Loading…" in panel
