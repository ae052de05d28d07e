"""The real GUI in headless Debian chromium, with the fake trainer (tests/fake_trainer.py).

Start a run and watch it progress, make samples and complete; stop a run (after reloading the
page, which must re-attach to it); kill a trainer and see the run interrupted, then resume it.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from gui_server import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, app_page, field, fill, free_port,  # noqa: F401
                        playwright_api, running_app, shot)  # (also imported from here by the other GUI modules)

REPO = Path(__file__).resolve().parent.parent
if playwright_api is not None:
    expect = playwright_api.expect


def fake_trainer_command() -> str:
    """LW_TRAINER_CMD for the fake trainer, quoted: the checkout's path may hold spaces."""
    from core.runs.launch import command_text

    return command_text([sys.executable, str(REPO / "tests" / "fake_trainer.py")])



def make_dataset(root: Path, folder: str, n: int) -> None:
    from PIL import Image

    (root / folder).mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (64, 64), (40 * i, 100, 200)).save(root / folder / f"{i}.png")
        (root / folder / f"{i}.txt").write_text("zqx, a square")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("gui")
    (root / "models").mkdir()
    (root / "models" / "base.safetensors").write_bytes(b"not a real model: the fake trainer never reads it")
    make_dataset(root / "data", "10_zqx", 4)
    make_dataset(root / "bad_data", "dogs", 3)
    old = root / "out" / "old_run"  # a finished run from an earlier session
    old.mkdir(parents=True)
    events = [{"type": "start", "pid": 1, "resumed": False, "step": 0}]
    events += [{"type": "step", "step": i, "total_steps": 5, "epoch": 1, "loss": 0.3 - i / 100, "avg_loss": 0.3}
               for i in range(1, 6)]
    events += [{"type": "end", "status": "completed", "exit_code": 0, "message": "Training complete",
                "lora_path": str(root / "out" / "old_run.safetensors")}]
    t0 = time.time() - 86400
    (old / "events.jsonl").write_text("".join(json.dumps({"time": t0 + i, **e}) + "\n" for i, e in enumerate(events)))
    (old / "status.json").write_text(json.dumps({"pid": 1, "status": "completed", "step": 5, "total_steps": 5,
                                                 "started_at": t0, "updated_at": t0 + 7, "exit_code": 0}))
    full = root / "out" / "full_run"  # a run the trainer ended because the disk was full (as core/train writes it)
    (full / "state").mkdir(parents=True)
    (full / "state" / "trainer.json").write_text("{}")
    (full / "state" / "lora.safetensors").write_bytes(b"")
    disk_msg = (f"Disk full while writing {full / 'state.new'} (120 MB free in {root / 'out'}); it needs about 300 "
                "MB. Free some space on that drive (or choose a folder on another one) and resume the run: its last "
                "complete state is kept.")
    events = [{"type": "start", "pid": 2, "resumed": False, "step": 0},
              {"type": "step", "step": 4, "total_steps": 10, "epoch": 1, "loss": 0.2, "avg_loss": 0.2},
              {"type": "error", "message": disk_msg},
              {"type": "end", "status": "failed", "exit_code": 1, "message": disk_msg}]
    (full / "events.jsonl").write_text("".join(json.dumps({"time": t0 + i, **e}) + "\n" for i, e in enumerate(events)))
    (full / "status.json").write_text(json.dumps({"pid": 2, "status": "failed", "step": 4, "total_steps": 10,
                                                  "started_at": t0, "updated_at": t0 + 4, "exit_code": 1,
                                                  "message": disk_msg}))
    settings = root / "settings.json"
    settings.write_text(json.dumps({"models_dir": str(root / "models"), "loras_dir": str(root / "out"),
                                    "outputs_dir": str(root / "out")}))
    port = free_port()
    env = dict(os.environ, LW_TRAINER_CMD=fake_trainer_command(),
               FAKE_STEP_SECONDS="0.12", FAKE_LOAD_SECONDS="0.3", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)]
    with running_app(cmd, port, root, env) as (url, proc):
        yield {"url": url, "root": root, "proc": proc, "settings": settings}
    for status in (root / "out").glob("*/status.json"):  # trainers outlive the GUI by design: end ours
        pid = json.loads(status.read_text()).get("pid")
        try:
            p = psutil.Process(pid)
            if "fake_trainer.py" in " ".join(p.cmdline()):
                p.kill()
        except (psutil.Error, TypeError):
            pass


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#start-btn", timeout=20_000) as pg:
        yield pg





def setup_run(page, app, name: str, *, batch: int = 4, epochs: int = 2, prompts: str = "zqx, a square") -> None:
    fill(page, "pretrained_model_name_or_path", app["root"] / "models" / "base.safetensors", enter=True)
    fill(page, "train_data_dir", app["root"] / "data")
    fill(page, "output_name", name)
    fill(page, "train_batch_size", batch)
    fill(page, "max_train_epochs", epochs)
    fill(page, "sample_prompts", prompts)
    expect(page.locator("#plan-box")).to_contain_text(f"{40 // batch * epochs} steps")


def start(page, name: str) -> None:
    page.click("#start-btn")
    expect(page.locator("#action-msg")).to_contain_text(f"Started '{name}'")
    expect(page.locator("#progress")).to_contain_text(name)


def progress(page) -> str:
    return page.locator("#progress").inner_text()


def step_of(page) -> int:
    m = re.search(r"step (\d+)", progress(page))
    return int(m.group(1)) if m else -1


def wait_step(page, at_least: int, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while (s := step_of(page)) < at_least:
        assert time.time() < deadline, progress(page)
        time.sleep(0.2)
    return s


def test_refuses_to_expose_without_password():
    for args in (["--host", "0.0.0.0"], ["--share"], ["--host", "192.168.1.5"], ["--auth", "nopassword"]):
        out = subprocess.run([sys.executable, str(REPO / "app.py"), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "--auth" in out.stderr, out


def test_progress_panel_says_complete_only_for_completed_runs(tmp_path):
    from core.runs.reader import RunInfo
    from ui.run_view import progress_html

    for status in ("running", "failed", "stopped", "interrupted"):
        info = RunInfo(name="x", dir=tmp_path, status=status, step=5, total_steps=10, exit_code=0,
                       lora_path=str(tmp_path / "x.safetensors"), message="Training complete: odd message")
        assert "Training complete." not in progress_html(info), status
    done = RunInfo(name="x", dir=tmp_path, status="completed", step=10, total_steps=10, exit_code=0, lora_path="x.st")
    assert "Training complete." in progress_html(done) and "width:100.0%" in progress_html(done)
    assert "<script>" not in progress_html(RunInfo(name="<script>", dir=tmp_path, status="failed",
                                                   error_lines=["<script>alert(1)</script>"]))


def test_app_start_imports_no_ml_libraries(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from ui.app_ui import build_app; "
            "from ui.settings import Settings; d = sys.argv[3]; "
            "build_app(Settings(path=sys.argv[2], models_dir=d, outputs_dir=d, loras_dir=d, datasets_dir=d)); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path / "s.json"), str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_form_checks_and_step_arithmetic(page, app):
    fill(page, "train_data_dir", app["root"] / "bad_data")
    plan = page.locator("#plan-box")
    expect(plan).to_contain_text("No training steps yet")
    expect(plan).to_contain_text("'dogs'")
    expect(plan).to_contain_text("'10_dogs'")
    fill(page, "train_data_dir", app["root"] / "data")
    expect(plan).to_contain_text("400 steps")  # 4 images x 10 repeats / batch 1 x 10 epochs
    fill(page, "train_batch_size", 2)
    fill(page, "max_train_epochs", 3)
    expect(plan).to_contain_text("60 steps")
    fill(page, "network_dim", 0)
    fill(page, "learning_rate", "")
    page.click("#start-btn")
    errors = page.locator("#form-errors-box")
    expect(errors).to_contain_text("network_dim = 0")
    expect(errors).to_contain_text("learning_rate = None")
    shot(page, "form_errors.png")
    fill(page, "network_dim", 16)
    fill(page, "learning_rate", "0.0001")
    page.click("#command-btn")
    expect(page.locator("#command-box")).to_contain_text("-m core train")
    expect(page.locator("#command-box")).to_contain_text("--max_train_epochs=3")
    expect(errors).not_to_contain_text("network_dim")


def test_preset_fills_the_form(page):
    page.locator("#preset input").click()
    page.get_by_role("option", name="SDXL character").click()
    expect(field(page, "resolution")).to_have_value("1024")
    expect(field(page, "network_dim")).to_have_value("32")  # sd-scripts' SDXL guide: 32/16, the 12 GB cell
    expect(page.locator("#preset-desc")).to_contain_text("SDXL")
    expect(field(page, "output_name")).to_have_value("my_lora")  # not a preset key: unchanged


def test_run_progresses_makes_samples_and_completes(page, app):
    setup_run(page, app, "run_ok", batch=2, epochs=3)  # 60 steps, samples after epochs 1 and 2 and at the end
    start(page, "run_ok")
    expect(page.locator("#progress")).to_contain_text("Training", timeout=20_000)
    first = wait_step(page, 3)
    expect(page.locator("#stop-btn")).to_be_visible()
    second = wait_step(page, first + 5)
    assert second > first
    assert "Training complete" not in progress(page)
    expect(page.locator("#samples img").first).to_be_visible(timeout=30_000)
    expect(page.locator("#samples")).to_contain_text("step 20")
    # the sample is served to this page (the file route serves what the GUI shows)
    got = page.evaluate("""async (src) => { const r = await fetch(src); const b = new Uint8Array(await r.arrayBuffer());
        return [r.status, Array.from(b.slice(0, 4))]; }""", page.locator("#samples img").first.get_attribute("src"))
    assert got == [200, [0x89, 0x50, 0x4E, 0x47]], got  # a PNG
    shot(page, "run_progress.png")
    expect(page.locator("#progress")).to_contain_text("Completed", timeout=60_000)
    expect(page.locator("#progress")).to_contain_text("Training complete")
    expect(page.locator("#progress")).to_contain_text("step 60 / 60")
    expect(page.locator("#stop-btn")).to_be_hidden()
    expect(page.locator("#history")).to_contain_text("run_ok")
    shot(page, "run_completed.png")
    assert (app["root"] / "out" / "run_ok.safetensors").is_file()


def test_validation_split_shows_its_curve_and_names_the_best_file(page, app):
    setup_run(page, app, "run_val", batch=2, epochs=2)
    fill(page, "validation_split", 1)  # one of the 4 images held out: 3 x 10 repeats / batch 2 = 15 steps per epoch
    expect(page.locator("#plan-box")).to_contain_text("1 held out for validation")
    expect(page.locator("#plan-box")).to_contain_text("30 steps")
    start(page, "run_val")
    expect(page.locator("#progress")).to_contain_text("Completed", timeout=60_000)
    expect(page.locator("#progress")).to_contain_text("Best file")
    expect(page.locator("#progress")).to_contain_text("run_val.safetensors")
    # the validation curve is drawn, in its own colour, over the training loss
    expect(page.locator("#loss-plot path[stroke='#ea580c']").first).to_be_attached()
    shot(page, "run_validation.png")


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_foreign_host_is_refused_and_files_are_served_only_when_shown(app):
    """DNS rebinding: a page on another domain pointed at 127.0.0.1 sends its own Host; the app refuses it before
    any route runs. The file route no longer serves a LoRA of the outputs folder by its path."""
    url, port = app["url"], app["url"].rstrip("/").rsplit(":", 1)[1]
    lora = app["root"] / "out" / "private.safetensors"
    lora.write_bytes(b"the user's LoRA")
    for path in ("", "gradio_api/info", f"gradio_api/file={lora}"):
        status, body = _get(url + path, host=f"evil.example:{port}")
        assert status == 403 and b"another host name" in body, (path, status)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert _get(url + "gradio_api/info", host=host)[0] == 200, host
    status, body = _get(url + f"gradio_api/file={lora}")
    assert status == 403 and b"the user's LoRA" not in body


def test_stop_after_reload_reattaches(page, app):
    setup_run(page, app, "run_stop", batch=1, epochs=20)  # 800 steps: it will not finish by itself
    fill(page, "sample_every_n_epochs", 0)  # samples only on request
    start(page, "run_stop")
    wait_step(page, 3)
    page.reload()
    page.wait_for_selector("#start-btn")
    expect(page.locator("#progress")).to_contain_text("run_stop", timeout=20_000)  # re-attached
    expect(page.locator("#progress")).to_contain_text("Training")
    expect(page.locator("#stop-btn")).to_be_visible()
    page.click("#sample-btn")
    expect(page.locator("#action-msg")).to_contain_text("Samples requested")
    expect(page.locator("#samples img").first).to_be_visible(timeout=20_000)
    page.click("#save-btn")
    expect(page.locator("#action-msg")).to_contain_text("Save requested")
    deadline = time.time() + 20
    while not list((app["root"] / "out").glob("run_stop-step*.safetensors")):
        assert time.time() < deadline, "Save now wrote no LoRA file"
        time.sleep(0.2)
    page.click("#stop-btn")
    expect(page.locator("#action-msg")).to_contain_text("Stop requested")
    expect(page.locator("#progress")).to_contain_text("Stopped", timeout=20_000)
    expect(page.locator("#progress")).not_to_contain_text("Training complete")
    expect(page.locator("#resume-btn")).to_be_visible()
    expect(page.locator("#history")).to_contain_text("Stopped")
    shot(page, "run_stopped.png")


def test_history_shows_and_selects_runs(page, app):
    history = page.locator("#history")
    expect(history).to_contain_text("old_run")
    history.get_by_text("old_run", exact=True).first.click()
    expect(page.locator("#progress")).to_contain_text("old_run")
    expect(page.locator("#progress")).to_contain_text("Completed")
    expect(page.locator("#progress")).to_contain_text("step 5 / 5")
    expect(page.locator("#resume-btn")).to_be_hidden()
    expect(page.locator("#use-cfg-btn")).to_be_visible()


def test_a_disk_full_run_says_so_and_offers_resume(page, app):
    history = page.locator("#history")
    expect(history).to_contain_text("full_run")
    history.get_by_text("old_run", exact=True).first.click()
    expect(page.locator("#progress")).to_contain_text("old_run")
    history.get_by_text("full_run", exact=True).filter(visible=True).first.click()
    progress = page.locator("#progress")
    expect(progress).to_contain_text("Disk full: training stopped")
    expect(progress).to_contain_text("120 MB free in")
    expect(progress).to_contain_text("free some space, then Resume continues from it")
    expect(progress).not_to_contain_text("Interrupted")
    expect(page.locator("#resume-btn")).to_be_visible()
    shot(page, "run_disk_full.png")


def test_failed_run_shows_the_error_and_no_success(page, app):
    setup_run(page, app, "run_fail", batch=4, epochs=3)
    page.locator("#adv-output").get_by_text("Output and saving").click()
    fill(page, "training_comment", "fake-crash-at-step 4")
    start(page, "run_fail")
    expect(page.locator("#progress")).to_contain_text("Failed", timeout=20_000)
    expect(page.locator("#progress")).to_contain_text("Training failed (exit code 1)")
    expect(page.locator("#progress")).to_contain_text("RuntimeError: fake crash at step 4")
    expect(page.locator("#progress")).not_to_contain_text("Training complete")
    expect(page.locator("#history")).to_contain_text("Failed")
    shot(page, "run_failed.png")


def test_killed_trainer_is_interrupted_then_resumed(page, app):
    setup_run(page, app, "run_kill", batch=4, epochs=3)  # 30 steps
    page.locator("#adv-output").get_by_text("Output and saving").click()
    fill(page, "save_state_every_n_steps", 3)
    start(page, "run_kill")
    wait_step(page, 7)
    status = json.loads((app["root"] / "out" / "run_kill" / "status.json").read_text())
    os.kill(status["pid"], signal.SIGKILL)
    expect(page.locator("#progress")).to_contain_text("Interrupted", timeout=20_000)
    expect(page.locator("#progress")).to_contain_text("can be resumed")
    expect(page.locator("#resume-btn")).to_be_visible()
    shot(page, "run_interrupted.png")
    page.click("#resume-btn")
    expect(page.locator("#action-msg")).to_contain_text("Resuming")
    expect(page.locator("#progress")).to_contain_text("Training", timeout=20_000)
    expect(page.locator("#progress")).to_contain_text("Completed", timeout=60_000)
    expect(page.locator("#progress")).to_contain_text("step 30 / 30")
    events = [json.loads(x) for x in (app["root"] / "out" / "run_kill" / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "start" and e.get("resumed") for e in events)
    shot(page, "run_resumed.png")


def test_config_files_and_user_presets(page, app):
    from core.config.presets import USER_DIR, slug

    page.locator("#files-accordion").get_by_text("Save as preset").click()
    toml = app["root"] / "mine.toml"
    toml.write_text('[network]\nnetwork_dim = 24\nnetwork_alpha = 12.0\n[data]\ntrain_data_dir = "/somewhere"\n')
    page.get_by_test_id("Load config (.toml, kohya .json)-upload-button").set_input_files(str(toml))
    expect(page.locator("#files-msg")).to_contain_text("Loaded mine.toml")
    expect(field(page, "network_dim")).to_have_value("24")
    expect(field(page, "train_data_dir")).to_have_value("/somewhere")
    expect(field(page, "output_name")).to_have_value("my_lora")  # not in the file: the default
    bad = app["root"] / "bad.toml"
    bad.write_text("network_dim = 0\n")
    page.get_by_test_id("Load config (.toml, kohya .json)-upload-button").set_input_files(str(bad))
    expect(page.locator("#files-msg")).to_contain_text("network_dim = 0")
    page.click("#export-config")
    expect(page.locator("#export-file").get_by_role("cell", name="my_lora.toml")).to_be_visible()
    kohya = REPO / "tests" / "data" / "kohya_gui_sd15_locon.json"  # a kohya_ss GUI config: converted, report shown
    page.get_by_test_id("Load config (.toml, kohya .json)-upload-button").set_input_files(str(kohya))
    expect(page.locator("#files-msg")).to_contain_text("converted from kohya_ss GUI config")
    expect(field(page, "output_name")).to_have_value("zqx_dog_v1")
    expect(field(page, "network_dim")).to_have_value("32")
    fill(page, "output_name", "my_lora")

    name = "zz GUI test preset"
    page_dim = field(page, "network_dim").input_value()
    try:
        page.locator("#preset-name input, #preset-name textarea").first.fill(name)
        page.click("#save-preset")
        expect(page.locator("#files-msg")).to_contain_text(f"Saved preset '{name}'")
        fill(page, "network_dim", 64)
        page.locator("#preset input").click()
        page.get_by_role("option", name=f"{name} (mine)").click()
        expect(field(page, "network_dim")).to_have_value(page_dim)
    finally:
        (USER_DIR / f"{slug(name)}.toml").unlink(missing_ok=True)


def test_settings_keep_the_token_secret(page, app):
    assert page.get_by_role("tab", name="Generate").count() == (1 if (REPO / "ui" / "generate_tab.py").exists() else 0)
    page.get_by_role("tab", name="Settings").click()
    expect(page.locator("#token-state")).to_contain_text("not set")
    page.locator("#set-token input").fill("hf_supersecret123")
    page.click("#save-settings")
    expect(page.locator("#token-state")).to_contain_text("set")
    expect(page.locator("#token-state")).not_to_contain_text("not set")
    expect(page.locator("#set-token input")).to_have_value("")
    assert "hf_supersecret123" not in page.content()
    settings = app["settings"]
    assert json.loads(settings.read_text())["hf_token"] == "hf_supersecret123"
    if os.name != "nt":
        assert settings.stat().st_mode & 0o777 == 0o600
    shot(page, "settings.png")
    page.click("#clear-token")
    expect(page.locator("#token-state")).to_contain_text("not set")


def test_system_check_report(page):
    if not (REPO / "core" / "doctor.py").exists():
        pytest.skip("core.doctor is not installed")
    page.get_by_role("tab", name="Settings").click()
    page.click("#doctor-btn")
    report = page.locator("#doctor-report textarea")
    expect(report).to_be_visible(timeout=120_000)
    expect(report).not_to_have_value("", timeout=120_000)
    assert "Python" in report.input_value()
    shot(page, "system_check.png")
