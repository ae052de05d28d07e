"""Multi-GPU training goes through `accelerate launch`; here with two CPU processes (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from safetensors.torch import load_file

from core.config.toml_io import save_config
from train_helpers import REPO, tiny_config


def test_accelerate_launch_two_processes(tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out", max_train_steps=0, max_train_epochs=1)
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "-m", "core", "train", "--config", str(config)],
                       cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    events = [json.loads(x) for x in (tmp_path / "out" / "lora" / "events.jsonl").read_text().splitlines()]
    plan = next(e for e in events if e["type"] == "plan")
    assert "on 2 processes" in plan["text"]
    assert plan["steps_per_epoch"] == 20, "40 uses split over 2 processes, batch 1"
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, 21)), "only the main process reports, once per step"
    assert sum(e["type"] == "end" for e in events) == 1 and events[-1]["status"] == "completed"
    lora = load_file(tmp_path / "out" / "lora.safetensors")
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))
