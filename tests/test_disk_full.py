"""A full disk during a training: at the first state save, a later state save, a LoRA save, the sample images
and the final status. The run ends as failed with one plain message (which file, how much is free, how much the
save needs, 'free space and resume'), the reader says it, nothing half-written is left, the last complete state
stays resumable, and a resume after freeing space completes with the LoRA of an uninterrupted run.

The disk is a real tmpfs (mounted here, so it needs root; skipped elsewhere) that a filler file makes full at the
chosen moment: the errors are the ones the libraries really raise (safetensors' 'No space left on device (os
error 28)', torch.save's 'unexpected pos')."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from core.runs.reader import read_run
from core.train.trainer import Trainer
from train_helpers import tiny_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="mounts a small tmpfs (Linux, root)")


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    mnt = tmp_path_factory.mktemp("small disk")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free on the disk."""
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - leave
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(size, 1))
    return filler


def free(disk: Path) -> None:
    for f in disk.glob("filler-*"):
        f.unlink()


@pytest.fixture(scope="module")
def reference(tiny_sd15, tiny_dataset, tmp_path_factory):
    """The LoRA of the same run with room to spare."""
    out = tmp_path_factory.mktemp("reference")
    t = Trainer(_cfg(tiny_sd15, tiny_dataset, out), echo=lambda m: None)
    assert t.train() == 0
    return load_file(out / "lora.safetensors")


def _cfg(model, data, out, **kw):
    values = dict(max_train_steps=8, save_state_every_n_steps=2, save_every_n_steps=4,
                  sample_prompts=["zqx --w 64 --h 64 --s 2"], sample_every_n_steps=4, sample_sampler="euler")
    return tiny_config(model, data, out, **{**values, **kw})


def _run_until_full(cfg, disk: Path, method: str, nth: int, leave: int, monkeypatch) -> Trainer:
    """Train, and fill the disk (leaving `leave` bytes) just before the nth call of Trainer.<method>."""
    original = getattr(Trainer, method)
    calls = {"n": 0}

    def wrapped(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == nth:
            fill(disk, leave)
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, method, wrapped)
    t = Trainer(cfg, echo=lambda m: None)
    code = t.train()
    monkeypatch.setattr(Trainer, method, original)
    assert code == 1
    return t


CASES = [  # (where the disk fills, Trainer method, which call, bytes left, what the message names)
    ("the latent cache", "_cache", 1, 0, "latents"),
    ("first state save, checked before writing", "_save_state", 1, 64 << 10, "state.new"),
    ("a later state save, full while writing", "_save_state", 2, 600 << 10, "state.new"),
    ("a LoRA save", "_save_lora", 1, 16 << 10, "lora-step00000004.safetensors"),
    ("the sample images", "_sample", 2, 4 << 10, "samples"),
]


@pytest.mark.parametrize("case, method, nth, leave, named", CASES, ids=[c[0] for c in CASES])
def test_disk_full_fails_plainly_and_resumes(small_disk, tiny_sd15, tiny_dataset, reference, monkeypatch,
                                             case, method, nth, leave, named):
    out = small_disk / method / str(nth)
    cache = dict(cache_latents=True, cache_latents_to_disk=True) if method == "_cache" else {}
    cfg = _cfg(tiny_sd15, tiny_dataset, out, **cache)
    if "while writing" in case:  # let the size check before writing pass: the write itself meets the full disk
        import core.train.state as state_mod

        real_free, asked = state_mod.free_bytes, []

        def free_bytes(folder):
            asked.append(folder)
            return 1 << 40 if len(asked) == nth else real_free(folder)  # the check before the nth save only

        monkeypatch.setattr(state_mod, "free_bytes", free_bytes)
    try:
        t = _run_until_full(cfg, small_disk, method, nth, leave, monkeypatch)
        monkeypatch.undo()
        status = json.loads(t.run.status_file.read_text())
        assert status["status"] == "failed"
        message = status["message"]
        assert message.startswith("Disk full while writing") and named in message, message
        assert "free in" in message and "Free some space" in message
        if method == "_save_state":
            assert "resume the run" in message and "needs about" in message
        info = read_run(t.run.path)
        assert info.status == "failed" and info.message.startswith("Disk full"), info.message
        assert not (t.run.path / "state.new").exists()  # the half-written state was removed
        assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
        assert "Traceback" in t.run.log_file.read_text()  # the details stay in train.log
    finally:
        free(small_disk)
    had_state = (t.run.path / "state" / "trainer.json").is_file()
    resumed = Trainer(cfg, resume=had_state, overwrite=not had_state, echo=lambda m: None)
    assert resumed.train() == 0
    got = load_file(out / "lora.safetensors")
    assert got.keys() == reference.keys()
    if not cache:  # (cached latents are another run: the reference encodes each step)
        for k in got:  # the resumed run is the uninterrupted one
            assert (got[k] == reference[k]).all(), k
    shutil.rmtree(out)


def test_the_status_is_written_when_nothing_else_fits(small_disk, tmp_path):
    """The last write of a failed run: status.json overwritten in place when no temporary copy fits."""
    from core.train.rundir import RunDir

    run = RunDir(small_disk / "status", "run")
    run.create()
    run.set_status(status="running", step=3, total_steps=8)
    try:
        fill(small_disk, 0)
        run.set_status(status="failed", exit_code=1, message="Disk full while writing x")
    finally:
        free(small_disk)
    doc = json.loads(run.status_file.read_text())
    assert doc["status"] == "failed" and doc["message"] == "Disk full while writing x"
    assert not list(run.path.glob(".status.json.*"))
    shutil.rmtree(small_disk / "status")


def test_a_warning_comes_before_the_saves_stop_fitting(small_disk, tiny_sd15, tiny_dataset, monkeypatch):
    """After a save, when the saves still to come will not fit, a warning event says so (the GUI lists warnings)."""
    import core.train.checkpoints as ck

    out = small_disk / "warn"
    cfg = _cfg(tiny_sd15, tiny_dataset, out, sample_every_n_steps=0)
    monkeypatch.setattr(ck, "free_bytes", lambda folder: 1 << 10)  # the drive looks nearly full after each save
    t = Trainer(cfg, echo=lambda m: None)
    assert t.train() == 0  # only a warning: the saves themselves had room
    warnings = [json.loads(x) for x in t.run.events_file.read_text().splitlines()
                if json.loads(x)["type"] == "warning"]
    space = [w["message"] for w in warnings if "still to be saved" in w["message"]]
    assert len(space) == 1 and "LoRA file(s)" in space[0] and "resumable" in space[0]
    shutil.rmtree(out)
