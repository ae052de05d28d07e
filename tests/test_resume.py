"""Stop, kill and resume: a resumed run ends with the same LoRA as an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config.toml_io import save_config
from train_helpers import REPO, run_cli, tiny_config

STEPS = 40


def _config(tiny_sd15, tiny_dataset, out: Path) -> Path:
    cfg = tiny_config(tiny_sd15, tiny_dataset, out, max_train_steps=STEPS, save_state_every_n_steps=4,
                      learning_rate=1e-3)
    path = out / "run.toml"
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path)
    return path


def _events(out: Path) -> list[dict]:
    f = out / "lora" / "events.jsonl"
    if not f.exists():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "train", "--config", str(config), *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(out: Path, pred, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if any(pred(e) for e in _events(out)):
            return
        assert proc.poll() is None, f"trainer exited early: {proc.stdout.read()}"
        time.sleep(0.05)
    raise AssertionError("timed out waiting for an event")


def _assert_same(a: Path, b: Path) -> None:
    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys()
    worst = max((ta[k] - tb[k]).abs().max().item() for k in ta)
    assert worst == 0.0, f"resumed LoRA differs from the uninterrupted one by {worst}"


@pytest.fixture(scope="module", autouse=True)
def one_thread_trainers():
    """The trainers of this module run on one CPU thread: with two, MKL's summation order follows the memory
    layout, so even two uninterrupted runs differ by ~1e-6; on one thread a resume is bit-identical."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if old is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old


@pytest.fixture(scope="module")
def reference(tiny_sd15, tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    r = run_cli("train", "--config", str(_config(tiny_sd15, tiny_dataset, out)))
    assert r.returncode == 0, r.stdout + r.stderr
    return out / "lora.safetensors"


def test_stop_then_resume_matches_uninterrupted(reference, tiny_sd15, tiny_dataset, tmp_path):
    config = _config(tiny_sd15, tiny_dataset, tmp_path)
    proc = _start(config)
    _wait_for(tmp_path, lambda e: e["type"] == "step" and e["step"] >= 3, proc)
    (tmp_path / "lora" / "control" / "stop").touch()
    assert proc.wait(120) == 3
    events = _events(tmp_path)
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "stopped" and end["exit_code"] == 3
    stopped_at = max(e["step"] for e in events if e["type"] == "step")
    assert stopped_at < STEPS
    assert json.loads((tmp_path / "lora" / "status.json").read_text())["status"] == "stopped"
    assert not (tmp_path / "lora.safetensors").exists(), "a stopped run must not write the final LoRA"

    r = run_cli("train", "--config", str(config), "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    events = _events(tmp_path)
    resumed = [e for e in events if e["type"] == "start" and e.get("resumed")]
    assert resumed and resumed[-1]["step"] == stopped_at
    first_after = [e["step"] for e in events[events.index(resumed[-1]):] if e["type"] == "step"][0]
    assert first_after == stopped_at + 1
    assert events[-1]["status"] == "completed"
    _assert_same(tmp_path / "lora.safetensors", reference)


def test_sigkill_then_resume_matches_uninterrupted(reference, tiny_sd15, tiny_dataset, tmp_path):
    config = _config(tiny_sd15, tiny_dataset, tmp_path)
    proc = _start(config)
    _wait_for(tmp_path, lambda e: e["type"] == "checkpoint" and e["kind"] == "state" and e["step"] >= 8, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    events = _events(tmp_path)
    assert events[-1]["type"] != "end"
    assert json.loads((tmp_path / "lora" / "status.json").read_text())["status"] == "running"
    assert not list(tmp_path.glob("**/*.tmp")), "a kill must not leave half-written files"

    r = run_cli("train", "--config", str(config), "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _events(tmp_path)[-1]["status"] == "completed"
    _assert_same(tmp_path / "lora.safetensors", reference)


def test_resume_without_state_and_rerun_without_resume_are_refused(reference, tiny_sd15, tiny_dataset, tmp_path):
    config = _config(tiny_sd15, tiny_dataset, tmp_path)
    r = run_cli("train", "--config", str(config), "--resume")
    assert r.returncode == 2 and "Nothing to resume" in r.stdout + r.stderr
    reference_config = reference.parent / "run.toml"
    r = run_cli("train", "--config", str(reference_config))
    assert r.returncode == 2 and "already holds a run" in r.stdout + r.stderr


def test_sample_now_and_save_now_from_outside(tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=400, learning_rate=1e-3,
                      sample_prompts=["zqx --w 64 --h 64 --s 2"], sample_every_n_epochs=0)
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    proc = _start(config)
    _wait_for(tmp_path, lambda e: e["type"] == "step", proc)
    control = tmp_path / "lora" / "control"
    (control / "sample").touch()
    (control / "save").touch()
    _wait_for(tmp_path, lambda e: e["type"] == "sample", proc)
    _wait_for(tmp_path, lambda e: e["type"] == "checkpoint" and e["kind"] == "manual", proc)
    (control / "stop").touch()
    assert proc.wait(120) == 3
    events = _events(tmp_path)
    sample = next(e for e in events if e["type"] == "sample")
    assert Path(sample["paths"][0]).is_file()
    manual = next(e for e in events if e["type"] == "checkpoint" and e["kind"] == "manual")
    assert Path(manual["path"]).is_file() and "-step" in manual["path"]
    assert not list(control.iterdir()), "handled requests are removed"


# sd-scripts' noise, loss and regularisation options, every random draw of which comes from the per-batch generators
NOISE_OPTIONS = dict(multires_noise_iterations=6, multires_noise_discount=0.3, noise_offset=0.05, adaptive_noise_scale=0.01,
                     noise_offset_random_strength=True, ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True,
                     debiased_estimation_loss=True, min_snr_gamma=5, min_timestep=50, max_timestep=950,
                     rank_dropout=0.2, module_dropout=0.1, network_dropout=0.1, scale_weight_norms=0.5)


def sigkill_then_resume(model: Path, data: Path, tmp_path: Path, **options) -> Path:
    """Train `reference` uninterrupted and `killed` SIGKILLed after its step-8 state, then resumed (16 steps,
    state every 4, through the CLI); returns the killed run's output folder (its LoRA is `lora.safetensors`)."""
    configs = {}
    for name in ("reference", "killed"):
        out = tmp_path / name
        out.mkdir()
        cfg = tiny_config(model, data, out, max_train_steps=16, save_state_every_n_steps=4, learning_rate=1e-3,
                          **options)
        configs[name] = out / "run.toml"
        save_config(cfg, configs[name])
    r = run_cli("train", "--config", str(configs["reference"]))
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "killed"
    proc = _start(configs["killed"])
    _wait_for(out, lambda e: e["type"] == "checkpoint" and e["kind"] == "state" and e["step"] >= 8, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert _events(out)[-1]["type"] != "end"
    r = run_cli("train", "--config", str(configs["killed"]), "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = [e for e in _events(out) if e["type"] == "start" and e.get("resumed")]
    assert resumed and 8 <= resumed[-1]["step"] < 16
    return out


def test_sigkill_then_resume_with_noise_options_is_bit_identical(tiny_sd15, tiny_dataset, tmp_path):
    """With every noise option, one image held out for the validation loss and a LoRA every 4 steps: the resumed
    LoRA is bit-identical; the resumed run holds out the same image, measures the same validation losses at the
    same steps and picks the same best file (its history before the kill comes back from the saved state)."""
    out = sigkill_then_resume(tiny_sd15, tiny_dataset, tmp_path, **NOISE_OPTIONS, validation_split=1,
                              save_every_n_steps=4)
    ref = tmp_path / "reference"
    ta, tb = load_file(out / "lora.safetensors"), load_file(ref / "lora.safetensors")
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta), "the resumed LoRA is not bit-identical"

    def losses(folder: Path) -> dict[int, float]:
        return {e["step"]: e["loss"] for e in _events(folder) if e["type"] == "validation"}

    assert losses(out) == losses(ref) and sorted(losses(ref)) == [0, 4, 8, 12, 16]
    assert (out / "lora" / "validation.json").read_text() == (ref / "lora" / "validation.json").read_text()
    end, ref_end = _events(out)[-1], _events(ref)[-1]
    assert Path(end["best"]["path"]).name == Path(ref_end["best"]["path"]).name
    assert end["best"]["loss"] == ref_end["best"]["loss"]
    history = json.loads((out / "lora" / "state" / "trainer.json").read_text())["validation"]["history"]
    assert [h["step"] for h in history] == [0, 4, 8, 12, 16]  # the steps before the kill came back with the state



def test_the_same_model_in_another_folder_trains_the_same_lora(tiny_sd15, tiny_dataset, tmp_path, one_thread):
    """Results depend on the weights, not on where they are: the VAE's config records the folder it was loaded from
    (_name_or_path), which once went into the latent cache key and so into the latents' noise draws."""
    import shutil

    from train_helpers import train_in_process

    files = []
    for where in ("a", "somewhere/much/longer/b"):
        model = shutil.copytree(tiny_sd15, tmp_path / "models" / where)
        cfg = tiny_config(model, tiny_dataset, tmp_path / "out" / where.replace("/", "_"), max_train_steps=2)
        files.append(train_in_process(cfg).run.lora_path())
    _assert_same(*files)
