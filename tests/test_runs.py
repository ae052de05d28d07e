"""core.runs.reader: event tailing, run status, steps arithmetic, command line, and launching (fake trainer)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from core.runs import launch
from core.runs import reader as runs
from core.runs.replace import replaceable_run_note
from core.runs.steps_plan import steps_plan
from core.config.toml_io import to_toml
from core.runs.launch import command_text
from core.config.schema import TrainConfig

TESTS = Path(__file__).resolve().parent
FAKE = command_text([sys.executable, str(TESTS / 'fake_trainer.py')])  # quoted: the path may hold spaces


# ------------------------------------------------------------------ helpers
def write_events(run_dir: Path, *events: dict, t0: float | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    t = t0 if t0 is not None else time.time() - 100
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as f:
        for i, ev in enumerate(events):
            f.write(json.dumps({"time": t + i, **ev}) + "\n")


def write_status(run_dir: Path, **doc) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"pid": 999999999, "status": "running", "step": 0, "total_steps": 10, "started_at": time.time() - 100,
            "updated_at": time.time(), "exit_code": None}
    (run_dir / "status.json").write_text(json.dumps({**base, **doc}))


def steps(a: int, b: int, total: int = 10) -> list[dict]:
    return [{"type": "step", "step": s, "total_steps": total, "epoch": 1, "loss": 1.0 / s, "avg_loss": 0.5,
             "lr": 1e-4, "it_per_s": 2.0, "eta_s": 3.0} for s in range(a, b + 1)]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def make_state(run_dir: Path) -> None:
    (run_dir / "state").mkdir(parents=True, exist_ok=True)
    (run_dir / "state" / "trainer.json").write_text("{}")
    (run_dir / "state" / "lora.safetensors").write_bytes(b"x")


# ------------------------------------------------------------------ tail_events
def test_completed_needs_end_event_with_exit_code_zero(tmp_path):
    d = tmp_path / "out" / "ok"
    write_status(d, status="completed", exit_code=0, step=10)
    write_events(d, {"type": "start", "pid": 999999999, "resumed": False, "step": 0}, *steps(1, 10),
                 {"type": "end", "status": "completed", "exit_code": 0, "message": "Training complete",
                  "lora_path": "/x/ok.safetensors"})
    info = runs.read_run(d)
    assert info.status == "completed" and info.exit_code == 0
    assert info.step == 10 and info.total_steps == 10 and info.lora_path == "/x/ok.safetensors"
    assert [s for s, _, _ in info.losses] == list(range(1, 11))


def test_completed_with_nonzero_exit_code_is_failed(tmp_path):
    d = tmp_path / "bad"
    write_status(d, status="completed", exit_code=1)
    write_events(d, {"type": "start", "pid": 1, "step": 0},
                 {"type": "end", "status": "completed", "exit_code": 1, "message": "odd"})
    assert runs.run_status(d) == "failed"


def test_status_json_completed_without_end_event_is_interrupted(tmp_path):
    d = tmp_path / "noend"
    write_status(d, status="completed", exit_code=0, pid=dead_pid())
    write_events(d, {"type": "start", "pid": 1, "step": 0}, *steps(1, 3))
    assert runs.run_status(d) == "interrupted"


def test_failed_run_shows_its_error(tmp_path):
    d = tmp_path / "f"
    write_status(d, status="failed", exit_code=1)
    write_events(d, {"type": "start", "pid": 1, "step": 0}, *steps(1, 2),
                 {"type": "error", "message": "CUDA out of memory. Try batch 1."},
                 {"type": "end", "status": "failed", "exit_code": 1, "message": "CUDA out of memory. Try batch 1."})
    info = runs.read_run(d)
    assert info.status == "failed" and info.exit_code == 1
    assert info.error_lines == ["CUDA out of memory. Try batch 1."]


def test_stopped_run_is_resumable(tmp_path):
    d = tmp_path / "s"
    write_status(d, status="stopped", exit_code=3, step=4)
    write_events(d, {"type": "start", "pid": 1, "step": 0}, *steps(1, 4),
                 {"type": "end", "status": "stopped", "exit_code": 3, "message": "Stopped at step 4"})
    assert runs.read_run(d).resumable is False
    make_state(d)
    info = runs.read_run(d)
    assert info.status == "stopped" and info.resumable and info.exit_code == 3


def test_running_needs_a_live_pid(tmp_path):
    me = psutil.Process()
    d = tmp_path / "live"
    write_status(d, pid=os.getpid(), started_at=me.create_time() + 1)
    write_events(d, {"type": "start", "pid": os.getpid(), "step": 0}, *steps(1, 3))
    info = runs.read_run(d)
    assert info.status == "running" and info.it_per_s == 2.0 and info.eta_s == 3.0

    d2 = tmp_path / "dead"
    write_status(d2, pid=dead_pid())
    write_events(d2, {"type": "start", "pid": 1, "step": 0}, *steps(1, 3))
    info = runs.read_run(d2)
    assert info.status == "interrupted" and info.it_per_s is None
    assert "gone" in info.message


def test_reused_pid_is_not_the_trainer(tmp_path):
    d = tmp_path / "reused"
    # our pid, but the run started long before this process existed: the pid was reused
    write_status(d, pid=os.getpid(), started_at=psutil.Process().create_time() - 3600)
    write_events(d, {"type": "start", "pid": os.getpid(), "step": 0})
    assert runs.run_status(d) == "interrupted"


def test_zombie_trainer_is_not_alive(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.05)
    d = tmp_path / "zombie"
    write_status(d, pid=p.pid, started_at=time.time() - 1)
    write_events(d, {"type": "start", "pid": p.pid, "step": 0})
    assert runs.run_status(d) == "interrupted"
    p.wait()


def test_resumed_attempt_replaces_the_lost_steps_and_clears_old_end(tmp_path):
    d = tmp_path / "resumed"
    write_status(d, pid=os.getpid(), started_at=time.time())
    t0 = time.time() - 100
    # attempt 1 reached step 8 then was killed; its state was saved at step 5
    write_events(d, {"type": "start", "pid": 1, "step": 0}, *steps(1, 8), t0=t0)
    write_events(d, {"type": "start", "pid": os.getpid(), "resumed": True, "step": 0},
                 {"type": "start", "pid": os.getpid(), "resumed": True, "step": 5}, *steps(6, 7), t0=t0 + 50)
    info = runs.read_run(d)
    assert info.status == "running" and info.step == 7
    assert [s for s, _, _ in info.losses] == [1, 2, 3, 4, 5, 6, 7]
    # a stopped attempt, then a resume that is still loading
    d2 = tmp_path / "again"
    write_events(d2, {"type": "start", "pid": 1, "step": 0}, *steps(1, 3),
                 {"type": "end", "status": "stopped", "exit_code": 3, "message": "Stopped"}, t0=t0)
    write_status(d2, status="stopped", exit_code=3, started_at=t0)
    assert runs.run_status(d2) == "stopped"
    (d2 / runs.LAUNCH_FILE).write_text(json.dumps({"pid": os.getpid(), "started_at": time.time()}))
    info = runs.read_run(d2)
    assert info.status == "running" and "starting" in info.stage
    write_events(d2, {"type": "start", "pid": os.getpid(), "resumed": True, "step": 0}, t0=time.time() + 1)
    write_status(d2, status="running", pid=os.getpid(), started_at=time.time())
    info = runs.read_run(d2)
    assert info.status == "running" and info.message == "" and info.exit_code is None


def test_launch_that_dies_before_writing_anything_is_failed(tmp_path):
    d = tmp_path / "early"
    d.mkdir()
    (d / runs.LAUNCH_FILE).write_text(json.dumps({"pid": dead_pid(), "started_at": time.time()}))
    (d / runs.CONSOLE_LOG).write_text("Config error:\n  Nothing to resume\n")
    info = runs.read_run(d)
    assert info.status == "failed"
    assert "Nothing to resume" in "\n".join(info.error_lines)


def test_list_runs_newest_first_and_skips_other_folders(tmp_path):
    out = tmp_path / "out"
    write_status(out / "old", status="completed", started_at=100.0)
    write_status(out / "new", status="completed", started_at=200.0)
    (out / "cache").mkdir()
    (out / "my_lora.safetensors").write_bytes(b"x")
    assert [r.name for r in runs.list_runs([out, tmp_path / "missing", ""])] == ["new", "old"]


def test_samples_are_labelled_by_step(tmp_path):
    d = tmp_path / "smp"
    (d / "samples").mkdir(parents=True)
    for name in ("s000020_00.png", "s000005_01.png", "s000005_00.png", "notes.txt"):
        (d / "samples" / name).write_bytes(b"png")
    write_status(d, status="completed")
    assert [lbl for _, lbl in runs.read_run(d).samples] == ["step 5", "step 5", "step 20"]
    assert Path(runs.read_run(d).samples[0][0]).name == "s000005_00.png"


def test_request_creates_control_files(tmp_path):
    for kind in ("stop", "sample", "save"):
        assert launch.request(tmp_path, kind).is_file()
    assert sorted(p.name for p in (tmp_path / "control").iterdir()) == ["sample", "save", "stop"]
    with pytest.raises(ValueError):
        launch.request(tmp_path, "explode")


# ------------------------------------------------------------------ steps arithmetic
def make_dataset(root: Path, folders: dict[str, int], ext: str = ".png") -> Path:
    for name, n in folders.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"img{i}{ext}").write_bytes(b"")
            (root / name / f"img{i}.txt").write_text("caption")
    return root


def test_steps_plan_arithmetic(tmp_path):
    root = make_dataset(tmp_path / "data", {"10_zqx": 4, "5_style": 3})
    (root / "5_style" / "extra.WEBP").write_bytes(b"")
    (root / "5_style" / "extra.bmp").write_bytes(b"")
    cfg = TrainConfig(train_batch_size=2, max_train_epochs=10)
    plan = steps_plan(root, cfg)
    assert plan.images == 9 and plan.uses_per_epoch == 40 + 25
    assert plan.steps_per_epoch == 33 and plan.total_steps == 330  # ceil(65 / 2) = 33
    assert plan.problems == []
    assert "= 330 steps" in plan.text and "33 steps per epoch" in plan.text

    plan = steps_plan(root, TrainConfig(train_batch_size=2, gradient_accumulation_steps=3, max_train_steps=50))
    assert plan.steps_per_epoch == 11 and plan.total_steps == 50 and plan.epochs == 5

    reg = make_dataset(tmp_path / "reg", {"1_dog": 100})
    plan = steps_plan(root, TrainConfig(train_batch_size=1, max_train_epochs=2, reg_data_dir=str(reg)))
    assert plan.reg_uses_per_epoch == 65 and plan.steps_per_epoch == 130 and plan.total_steps == 260


def test_steps_plan_names_folders_without_repeats_prefix(tmp_path):
    root = make_dataset(tmp_path / "data", {"dogs": 3})
    (root / "loose.jpg").write_bytes(b"")
    plan = steps_plan(root, TrainConfig())
    assert not plan.ok and plan.total_steps == 0
    msg = " ".join(plan.problems)
    assert "'dogs'" in msg and "'10_dogs'" in msg and "prefix" in msg
    assert "1 images lie directly in" in msg
    assert plan.text.startswith("No steps")
    # a good folder next to the bad one: steps are counted, the bad folder still reported
    make_dataset(root, {"2_cats": 5})
    plan = steps_plan(root, TrainConfig(train_batch_size=1, max_train_epochs=1))
    assert plan.total_steps == 10 and any("'dogs'" in p for p in plan.problems)


def test_steps_plan_missing_folder(tmp_path):
    assert steps_plan("", TrainConfig()).problems == ["Training images folder is not set."]
    assert "not found" in steps_plan(tmp_path / "nope", TrainConfig()).problems[0]


# ------------------------------------------------------------------ command line
def test_command_line_reproduces_the_config(tmp_path):
    cfg = TrainConfig(
        pretrained_model_name_or_path=str(tmp_path / "my models" / "base.safetensors"),
        train_data_dir=str(tmp_path / "data"), output_name="it's mine", learning_rate=5e-5, unet_lr=2e-4,
        network_dim=32, network_alpha=16, cache_latents=False, flip_aug=True, resolution="1024,768",
        sample_prompts=["zqx dog --n blurry --w 512", '-leading dash "quoted"'], optimizer_args=["weight_decay=0.01"],
        mixed_precision="bf16")
    line = launch.command_line(cfg)
    assert "--no-cache_latents" in line and "--flip_aug" in line and "--network_dim=32" in line
    assert "--seed" not in line  # defaults are left out
    import shlex
    args = shlex.split(line)[3:] + ["--print-config"]
    out = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=120,
                         cwd=TESTS.parent)
    assert out.returncode == 0, out.stderr
    assert tomllib.loads(out.stdout) == tomllib.loads(to_toml(cfg, grouped=True))
    assert launch.command_line(cfg, resume=True).endswith("--resume")


# ------------------------------------------------------------------ launching (fake trainer)
@pytest.fixture
def fake_trainer(monkeypatch):
    monkeypatch.setenv(runs.TRAINER_CMD_ENV, FAKE)
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    monkeypatch.setenv("FAKE_LOAD_SECONDS", "0.1")


def wait_for(run_dir: Path, pred, timeout: float = 30.0) -> runs.RunInfo:
    deadline = time.time() + timeout
    while True:
        info = runs.read_run(run_dir)
        if pred(info):
            return info
        assert time.time() < deadline, f"timed out; last: {info}"
        time.sleep(0.1)


def test_start_stop_resume_with_fake_trainer(tmp_path, fake_trainer):
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), output_name="demo", max_train_steps=30,
                      sample_prompts=["zqx"], save_state_every_n_steps=5)
    proc = launch.start_run(cfg)
    run_dir = tmp_path / "out" / "demo"
    assert (run_dir / "config.toml").is_file()
    cmdline = psutil.Process(proc.pid).cmdline()  # the process started is this run's trainer
    assert cmdline[-3:] == ["train", "--config", str((run_dir / "config.toml").resolve())], cmdline
    if os.name != "nt":
        assert os.getsid(proc.pid) == proc.pid  # own session: survives the GUI
    with pytest.raises(runs.RunBusyError):
        launch.start_run(cfg)
    wait_for(run_dir, lambda i: i.step >= 3)
    launch.request(run_dir, "sample")
    wait_for(run_dir, lambda i: i.samples)
    launch.request(run_dir, "stop")
    info = wait_for(run_dir, lambda i: i.status != "running")
    assert info.status == "stopped" and info.resumable and proc.wait(5) == 3
    stopped_at = info.step
    with pytest.raises(runs.RunExistsError):
        launch.start_run(cfg)
    proc = launch.start_run(cfg, resume=True)
    info = wait_for(run_dir, lambda i: i.status != "running")
    assert proc.wait(5) == 0
    assert info.status == "completed" and info.step == 30 and info.lora_path.endswith("demo.safetensors")
    assert [s for s, _, _ in info.losses] == list(range(1, 31)) and stopped_at < 30
    assert "=== " in (run_dir / "console.log").read_text()


def test_killed_trainer_is_interrupted_and_crash_is_failed(tmp_path, fake_trainer, monkeypatch):
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), output_name="k", max_train_steps=400)
    proc = launch.start_run(cfg)
    run_dir = tmp_path / "out" / "k"
    wait_for(run_dir, lambda i: i.step >= 2)
    proc.kill()
    proc.wait()
    info = wait_for(run_dir, lambda i: i.status != "running", 5)
    assert info.status == "interrupted"

    monkeypatch.setenv("FAKE_CRASH_AT_STEP", "3")
    proc = launch.start_run(cfg, overwrite=True)
    info = wait_for(run_dir, lambda i: i.status != "running")
    assert info.status == "failed" and "fake crash at step 3" in info.error_lines[0] and proc.wait(5) == 1
    assert info.step == 2  # the overwrite started from scratch


def failed_at_load(run_dir: Path, message: str = "Cannot load the base model 'nope.safetensors'") -> None:
    write_status(run_dir, status="failed", exit_code=2, step=0, pid=dead_pid())
    write_events(run_dir, {"type": "start", "pid": 1, "step": 0},
                 {"type": "progress", "stage": "load_model", "done": 0, "total": 1},
                 {"type": "error", "message": message},
                 {"type": "end", "status": "failed", "exit_code": 2, "message": message})


def test_only_a_run_that_trained_nothing_is_replaceable(tmp_path):
    d = tmp_path / "out" / "r"
    failed_at_load(d, "Cannot load the base model 'nope.safetensors'\nsecond line")
    note = replaceable_run_note(d)
    assert note == ("The previous attempt at this run failed before training (Cannot load the base model "
                    "'nope.safetensors'); starting it again.")

    (tmp_path / "out" / "r-000001.safetensors").write_bytes(b"x")  # a LoRA of this run beside the folder
    assert replaceable_run_note(d) is None
    (tmp_path / "out" / "r-000001.safetensors").unlink()
    (tmp_path / "out" / "r-v2.safetensors").write_bytes(b"x")  # another run's LoRA does not count
    assert replaceable_run_note(d) is not None
    make_state(d)
    assert replaceable_run_note(d) is None

    trained = tmp_path / "out" / "t"  # failed at step 3: its steps are worth keeping
    write_status(trained, status="failed", exit_code=1, step=3, pid=dead_pid())
    write_events(trained, {"type": "start", "pid": 1, "step": 0}, *steps(1, 3),
                 {"type": "end", "status": "failed", "exit_code": 1, "message": "CUDA out of memory"})
    assert replaceable_run_note(trained) is None
    completed = tmp_path / "out" / "c"
    write_status(completed, status="completed", exit_code=0, step=0, pid=dead_pid())
    write_events(completed, {"type": "start", "pid": 1, "step": 0},
                 {"type": "checkpoint", "kind": "final", "path": str(tmp_path / "out" / "c.safetensors")},
                 {"type": "end", "status": "completed", "exit_code": 0, "message": "done"})
    assert replaceable_run_note(completed) is None

    loading = tmp_path / "out" / "l"  # no end event and its trainer is alive: still loading, not ours
    me = psutil.Process()
    write_status(loading, status="running", pid=os.getpid(), started_at=me.create_time() + 1)
    write_events(loading, {"type": "start", "pid": os.getpid(), "step": 0})
    assert replaceable_run_note(loading) is None
    gone = tmp_path / "out" / "g"  # no end event, process gone (killed while loading)
    write_status(gone, status="running", pid=dead_pid())
    write_events(gone, {"type": "start", "pid": 1, "step": 0})
    assert "ended before training (the trainer process ended without finishing)" in replaceable_run_note(gone)


def test_run_that_failed_at_load_is_started_again_without_replace(tmp_path, fake_trainer):
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), output_name="again", max_train_steps=6,
                      training_comment="fake-fail-at-load")
    run_dir = tmp_path / "out" / "again"
    proc = launch.start_run(cfg)
    info = wait_for(run_dir, lambda i: i.status != "running")
    assert proc.wait(5) == 2 and info.status == "failed" and info.step == 0

    cfg.training_comment = ""  # the setting is fixed; Start again, without ticking Replace
    proc = launch.start_run(cfg)
    info = wait_for(run_dir, lambda i: i.status != "running")
    assert proc.wait(5) == 0 and info.status == "completed" and info.step == 6
    log = (run_dir / "train.log").read_text()
    assert "The previous attempt at this run failed before training (Cannot load the base model" in log
    assert "fake" not in (run_dir / "config.toml").read_text().split("training_comment")[-1].split("\n")[0]

    with pytest.raises(runs.RunExistsError):  # a completed run stays protected
        launch.start_run(cfg)


def test_partly_trained_failed_run_is_still_protected(tmp_path, fake_trainer):
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), output_name="part", max_train_steps=20,
                      training_comment="fake-crash-at-step 3")
    run_dir = tmp_path / "out" / "part"
    proc = launch.start_run(cfg)
    info = wait_for(run_dir, lambda i: i.status != "running")
    assert proc.wait(5) == 1 and info.status == "failed" and info.step == 2
    with pytest.raises(runs.RunExistsError):
        launch.start_run(cfg)
    assert replaceable_run_note(run_dir) is None


def test_resume_without_state_is_refused(tmp_path, fake_trainer):
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), output_name="nostate")
    with pytest.raises(FileNotFoundError):
        launch.start_run(cfg, resume=True)


# ------------------------------------------------------------------ the real trainer
@pytest.mark.slow  # about 30 s on an idle 2-core machine, minutes on a busy one
def test_real_trainer_stop_resume_complete(tiny_sd15, tiny_dataset, tmp_path, monkeypatch):
    """`python -m core train` on the tiny model with the Demo preset: stop, resume, complete."""
    monkeypatch.delenv(runs.TRAINER_CMD_ENV, raising=False)
    from core.config import presets

    base = TrainConfig(pretrained_model_name_or_path=str(tiny_sd15), train_data_dir=str(tiny_dataset),
                       output_dir=str(tmp_path / "out"), output_name="real", trigger_word="zqx")
    cfg = presets.apply_preset(presets.find_preset("Demo (CPU)"), base)
    cfg.max_train_steps, cfg.save_state_every_n_steps = 8, 2
    run_dir = tmp_path / "out" / "real"
    proc = launch.start_run(cfg)
    wait_for(run_dir, lambda i: i.step >= 2, timeout=300)  # generous: 2 shared CPU cores can be very slow
    launch.request(run_dir, "stop")
    info = wait_for(run_dir, lambda i: i.status != "running", timeout=120)
    assert info.status == "stopped" and info.resumable and proc.wait(10) == 3, info
    assert info.step < 8
    proc = launch.start_run(cfg, resume=True)
    info = wait_for(run_dir, lambda i: i.status != "running", timeout=300)
    assert proc.wait(10) == 0 and info.status == "completed", info
    assert info.step == info.total_steps and Path(info.lora_path).is_file()
    assert [s for s, _, _ in info.losses] == list(range(1, info.total_steps + 1))
    assert info.samples and all(Path(p).is_file() for p, _ in info.samples)


def test_training_time_leaves_out_the_pause_between_stop_and_resume(tmp_path):
    d = tmp_path / "paused"
    write_status(d, status="completed", exit_code=0)
    write_events(d, {"type": "start", "pid": 1, "step": 0}, *steps(1, 4),
                 {"type": "end", "status": "stopped", "exit_code": 3, "message": "Stopped"}, t0=1000.0)  # 1000..1005
    write_events(d, {"type": "start", "pid": 1, "resumed": True, "step": 0},
                 {"type": "start", "pid": 1, "resumed": True, "step": 4}, *steps(5, 10),
                 {"type": "end", "status": "completed", "exit_code": 0, "message": "done"}, t0=90000.0)  # ..90008
    info = runs.read_run(d)
    assert info.status == "completed" and info.started_at == 1000.0
    assert info.active_s == pytest.approx(5 + 8)


def test_request_made_while_the_trainer_loads_survives_its_start(tmp_path):
    d = tmp_path / "loading"
    d.mkdir()
    (d / runs.LAUNCH_FILE).write_text(json.dumps({"pid": os.getpid(), "started_at": time.time() - 1}))
    assert runs.read_run(d).status == "running"
    launch.request(d, "stop")
    assert json.loads((d / runs.LAUNCH_FILE).read_text())["pending_requests"] == ["stop"]
    (d / "control" / "stop").unlink()  # the trainer clears control/ when it takes the folder ...
    write_events(d, {"type": "start", "pid": os.getpid(), "resumed": False, "step": 0}, t0=time.time())
    runs.read_run(d)  # ... and the next read makes the request again
    assert (d / "control" / "stop").is_file()
    assert "pending_requests" not in json.loads((d / runs.LAUNCH_FILE).read_text())
    (d / "control" / "stop").unlink()  # taken by the trainer: not made a third time
    runs.read_run(d)
    assert not (d / "control" / "stop").exists()
