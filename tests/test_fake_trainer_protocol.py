"""tests/fake_trainer.py stands in for `python -m core train` in the GUI and runs tests. It writes through the
real RunDir, and this test holds it to the real trainer's output: the same event types carry the same fields,
and status.json has the same keys, so the two cannot drift apart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.config.toml_io import save_config
from train_helpers import tiny_config, train_in_process

FAKE = Path(__file__).resolve().parent / "fake_trainer.py"


def _events(run_dir: Path) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        keys.setdefault(ev["type"], set()).update(ev)
    return keys


def test_the_fake_trainer_writes_what_the_trainer_writes(tiny_sd15, tiny_dataset, tmp_path):
    settings = dict(max_train_steps=4, save_every_n_steps=2, save_state_every_n_steps=2,
                    sample_prompts=["zqx --w 64 --h 64 --s 2"], sample_every_n_epochs=1)
    real_cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "real", **settings)
    train_in_process(real_cfg)
    fake_cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "fake", **settings)
    save_config(fake_cfg, tmp_path / "fake.toml")
    env = dict(os.environ, FAKE_STEP_SECONDS="0.01", FAKE_LOAD_SECONDS="0")
    p = subprocess.run([sys.executable, str(FAKE), "train", "--config", str(tmp_path / "fake.toml")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr

    real, fake = _events(tmp_path / "real" / "lora"), _events(tmp_path / "fake" / "lora")
    assert set(fake) <= set(real), f"event types only the fake writes: {set(fake) - set(real)}"
    for kind in ("start", "plan", "checkpoint", "sample", "end"):
        assert fake[kind] == real[kind], f"{kind}: fake {sorted(fake[kind])} vs real {sorted(real[kind])}"
    assert fake["step"] <= real["step"], f"step fields only the fake writes: {fake['step'] - real['step']}"
    real_status = json.loads((tmp_path / "real" / "lora" / "status.json").read_text())
    fake_status = json.loads((tmp_path / "fake" / "lora" / "status.json").read_text())
    assert set(fake_status) == set(real_status)
    assert fake_status["status"] == real_status["status"] == "completed"
    for name in ("config.toml", "train.log", "samples", "state", "control"):
        assert (tmp_path / "fake" / "lora" / name).exists() and (tmp_path / "real" / "lora" / name).exists(), name
