"""The command line's one error boundary: every subcommand and sub-subcommand, given bad input (missing paths, a
text file where a model or LoRA is expected, a truncated .safetensors, a checkpoint of an odd layout, broken TOML,
negative numbers), exits non-zero with a message that names the file or option, and never prints a traceback.
A genuine bug prints a one-line summary and leaves its traceback in logs/errors.log."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad inputs")
    (d / "notes.txt").write_text("hello")
    (d / "fake.safetensors").write_text("this is not a model")
    good = d / "good.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(good))
    data = good.read_bytes()
    (d / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(7, 3, 3, 3),
               "model.diffusion_model.out.2.weight": torch.zeros(3, 7, 3, 3)}, str(d / "odd.safetensors"))
    (d / "bad.toml").write_text("this = = not toml")
    (d / "empty").mkdir()
    (d / "queue").mkdir()
    (d / "queue" / "queue.json").write_text("{ this is not json")
    return {k: str(d / v) for k, v in {"txt": "notes.txt", "fake": "fake.safetensors", "good": "good.safetensors",
                                         "trunc": "trunc.safetensors", "odd": "odd.safetensors", "toml": "bad.toml",
                                         "empty": "empty", "out": "out.safetensors", "queue": "queue"}.items()} | {
        "missing": str(d / "missing" / "x.safetensors")}


# (argv with {placeholders}, what the message must name)
CASES = [
    ("train --config {toml}", "bad.toml"),
    ("train --config {fake}", "fake.safetensors"),
    ("train --config {missing}", "x.safetensors"),
    ("train --set network_dim=-4", "network_dim"),
    ("convert-config {txt}", "notes.txt"),
    ("convert-config {missing}", "x.safetensors"),
    ("demo --images -3", "--images"),
    ("demo --steps -1", "--steps"),
    ("demo --model {missing}", "x.safetensors"),
    ("dataset check {missing}", "x.safetensors"),
    ("dataset check {txt}", "notes.txt"),
    ("dataset check {empty} --resolution -5", "--resolution"),
    ("dataset prepare {missing} --out {empty} --name x", "x.safetensors"),
    ("dataset prepare {empty} --out {empty} --name x --repeats -2", "Repeats"),
    ("dataset captions {txt}", "notes.txt"),
    ("caption {missing}", "x.safetensors"),
    ("caption {empty} --batch-size -1", "--batch-size"),
    ("lora inspect {missing}", "x.safetensors"),
    ("lora inspect {txt}", "notes.txt"),
    ("lora inspect {fake}", "fake.safetensors"),
    ("lora inspect {trunc}", "trunc.safetensors"),
    ("lora check {good} --base {missing}", "x.safetensors"),
    ("lora check {good} --base {fake}", "fake.safetensors"),
    ("lora check {good} --base {odd}", "--config-dir"),
    ("lora merge --lora {fake} --out {out}", "fake.safetensors"),
    ("lora merge --lora {good} --out {out} --rank -4", "--rank"),
    ("lora resize {trunc} --out {out} --rank 2", "trunc.safetensors"),
    ("lora resize {good} --out {out} --rank -4", "--rank"),
    ("lora extract --base {odd} --tuned {odd} --out {out}", "--config-dir"),
    ("lora extract --base {missing} --tuned {fake} --out {out}", "x.safetensors"),
    ("lora convert {fake} --to diffusers --out {out}", "fake.safetensors"),
    ("lora convert {good} --to diffusers --out {missing}", "missing"),
    ("estimate --config {toml}", "bad.toml"),
    ("estimate --family flux --vram -8", "--vram"),
    ("suggest --family sd15 --vram -8", "--vram"),
    ("suggest --family sd15 --vram 8 --images -3", "--images"),
    ("suggest --family sd15 --vram 8 --data {missing}", "x.safetensors"),
    ("queue add --config {toml}", "bad.toml"),
    ("queue add --config {missing}", "x.safetensors"),
    ("queue list", "queue.json"),  # LW_QUEUE_DIR holds a broken queue.json in these cases
    ("queue remove 1", "queue.json"),
    ("queue move 1 --to -3", "--to"),
    ("queue move 1 --up", "queue.json"),
    ("queue stop 1", "queue.json"),
    ("queue clear", "queue.json"),
    ("queue work", "queue.json"),
    ("models list --catalog {toml}", "bad.toml"),
    ("models get sd15 --catalog {missing}", "x.safetensors"),
    ("models get no-such-model", "no-such-model"),
    ("models get sd15 --to {empty}", "HF_HUB_OFFLINE"),  # offline (this sweep's setting) said plainly
]


@pytest.mark.parametrize("argv, named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_message_not_a_traceback(bad, capsys, monkeypatch, tmp_path, argv, named):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LW_LOGS", str(tmp_path / "logs"))
    monkeypatch.setenv("LW_QUEUE_DIR", bad["queue"])
    monkeypatch.chdir(tmp_path)
    args = [a.format(**bad) for a in argv.split()]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own refusal: usage line and the option's message
        code = e.code
    out, err = capsys.readouterr()
    said = out + err
    assert code not in (0, None), said
    assert "Traceback" not in said and "Unexpected error" not in said, said
    assert named in said, said
    assert not (tmp_path / "logs" / "errors.log").exists()


def test_every_subcommand_is_in_the_sweep():
    """A new subcommand gets bad-input cases here too."""
    import argparse

    from core.cli import build_parser

    def leaves(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield " ".join(prefix)
            return
        for name, sp in subs[0].choices.items():
            yield from leaves(sp, prefix + [name])

    swept = {" ".join(c[0].split()[:2]) if c[0].split()[0] in ("dataset", "lora", "queue", "models") else c[0].split()[0]
             for c in CASES}
    missing = set(leaves(build_parser(), [])) - swept - {"config-reference", "doctor"}  # these take no input
    assert not missing, f"add bad-input cases for: {sorted(missing)}"


def test_a_bug_prints_one_line_and_logs_the_traceback(tmp_path):
    code = ("import sys, core.estimate.cli as e\n"
            "def broken(args):\n    return {}['no such key']\n"
            "e.run = broken\n"
            "from core.cli import main\nsys.exit(main(['estimate', '--family', 'sd15']))\n")
    env = dict(os.environ, LW_LOGS=str(tmp_path / "logs"), HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 70
    assert "Traceback" not in p.stderr
    assert "Unexpected error (a bug in LoRA Workshop): KeyError: 'no such key'" in p.stderr
    log = (tmp_path / "logs" / "errors.log").read_text()
    assert "Traceback (most recent call last)" in log and 'line 3, in broken' in log and "KeyError" in log
    assert "python -m core estimate --family sd15" in log and str(tmp_path / "logs" / "errors.log") in p.stderr


def test_the_os_says_no(tmp_path, capsys):
    import errno

    from core import failures

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "state.safetensors"))
    msg, code = failures.explain(full)
    assert code == failures.EXIT_SYSTEM and msg.startswith("Disk full while writing")
    assert "state.safetensors" in msg and "free in" in msg and "Free some space" in msg
    msg, _ = failures.explain(PermissionError(errno.EACCES, "Permission denied", "C:/loras/x.safetensors"))
    assert "No permission to use C:/loras/x.safetensors" in msg
    assert "Out of memory (RAM)" in failures.explain(MemoryError())[0]
    assert failures.explain(ZeroDivisionError("x")) is None  # a bug


def test_a_download_onto_a_full_disk_says_disk_full(monkeypatch, tmp_path):
    import errno

    import huggingface_hub

    from core.hub import snapshot

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "hub" / "model.safetensors"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", full)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ValueError) as e:
        snapshot("org/model")
    assert str(e.value).startswith("Could not get org/model: Disk full while writing") and "model.safetensors" in \
        str(e.value) and "cannot be reached" not in str(e.value)


def test_a_large_write_checks_the_room_first(monkeypatch, tmp_path):
    import core.config.toml_io as tio
    from core.failures import DiskFull

    monkeypatch.setattr(tio, "free_bytes", lambda folder: 3 << 20)  # 3 MB free
    target = tmp_path / "out" / "prepared.png"
    with pytest.raises(DiskFull) as e:
        tio.atomic_write_bytes(target, b"x" * (2 << 20))  # 2 MB + the margin does not fit
    assert str(e.value).startswith(f"Disk full while writing {target}") and "needs about 2 MB" in str(e.value)
    assert not target.exists() and not list(target.parent.iterdir())
    tio.atomic_write_bytes(target, b"small")  # small writes (status, captions) do not ask
    assert target.read_bytes() == b"small"
