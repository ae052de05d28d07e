"""Full CLI runs, as a user types them: from a diffusers folder and from a single-file checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.config.toml_io import save_config
from core.models.ldm_convert import pipeline_to_ldm_state_dict, save_single_file
from train_helpers import run_cli, tiny_config


def single_file(model: Path, family: str, out: Path) -> Path:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = (StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline).from_pretrained(model)
    sd = pipeline_to_ldm_state_dict(family, pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
    path = out / f"tiny_{family}.safetensors"
    save_single_file(path, sd)
    return path


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("source", ["folder", "single_file"])
def test_cli_trains_and_writes_the_run_directory(family, source, request, tiny_dataset, tmp_path):
    model = request.getfixturevalue(f"tiny_{family}")
    extra = {}
    if source == "single_file":
        # the tiny architecture is not the standard one, so it comes with its config folder
        extra["base_config_dir"] = str(model)
        model = single_file(model, family, tmp_path)
    cfg = tiny_config(model, tiny_dataset, tmp_path / "out", max_train_steps=0, max_train_epochs=2,
                      train_batch_size=2, save_every_n_epochs=1, sample_every_n_epochs=1,
                      sample_prompts=["zqx, a red circle --n blurry --w 64 --h 64 --d 5 --s 3 --l 5"],
                      trigger_word="zqx", **extra)
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    r = run_cli("train", "--config", str(config), "--set", "network_dim=2", "--network_alpha", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    run = out / "lora"
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and events[-1]["status"] == "completed"
    plan = next(e for e in events if e["type"] == "plan")
    # 4 images x 10 repeats in batches of 2 taken within each bucket
    assert plan["images"] == 4 and sum(b["count"] for b in plan["buckets"]) == 40
    assert all(b["width"] * b["height"] <= 64 * 64 for b in plan["buckets"])
    per_epoch = sum(-(-b["count"] // 2) for b in plan["buckets"])
    assert plan["steps_per_epoch"] == per_epoch and plan["total_steps"] == 2 * per_epoch
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 2 * per_epoch + 1))
    assert all(e["loss"] > 0 and e["eta_s"] is not None for e in steps)
    assert (out / "lora.safetensors").is_file() and (out / "lora-000001.safetensors").is_file()
    assert not (out / "lora-000002.safetensors").exists(), "the last epoch is the final file"
    samples = [p for e in events if e["type"] == "sample" for p in e["paths"]]
    assert len(samples) == 2 and all(Path(p).is_file() for p in samples)
    params = Image.open(samples[0]).text["parameters"]
    assert params.startswith("zqx, a red circle\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 5, Seed: 5, Size: 64x64")
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["exit_code"] == 0 and status["step"] == 2 * per_epoch
    effective = (run / "config.toml").read_text()
    assert "network_dim = 2" in effective and "network_alpha = 1.0" in effective
    assert "Training complete" in r.stdout


def test_ckpt_single_file_loads_without_pickle_code(tiny_sd15, tmp_path):
    """A .ckpt holding plain tensors loads (weights_only=True), through the same loader as a user's model."""
    import torch

    from core.models.loading import load_pipeline

    sd = load_single(single_file(tiny_sd15, "sd15", tmp_path))
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd}, ckpt)
    pipe, fam = load_pipeline(str(ckpt), base_config_dir=str(tiny_sd15))
    assert fam.name == "sd15"
    ref = load_single(single_file(tiny_sd15, "sd15", tmp_path))
    got = pipe.unet.state_dict()
    assert torch.equal(got["conv_in.weight"], ref["model.diffusion_model.input_blocks.0.0.weight"])


def load_single(path):
    from safetensors.torch import load_file

    return load_file(path)


def test_bitsandbytes_kernel_notice_stays_out_of_the_terminal_and_train_log(tiny_sd15, tiny_dataset, tmp_path):
    """bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community" when it is imported
    on a CPU with AVX512-BF16 and no `kernels` package; core.logs drops that notice in every process."""
    import subprocess
    import sys

    from train_helpers import REPO

    def stderr_of(code: str) -> str:
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stderr

    quiet = stderr_of("from core.logs import quiet_library_notices; quiet_library_notices(); import bitsandbytes")
    assert "kernels-community" not in quiet
    loud = stderr_of("import bitsandbytes")  # without it: the notice, where this CPU has the kernel's instructions
    assert "kernels-community" in loud or "gemm_4bit" not in loud

    r = run_cli("train", "--help")
    assert r.returncode == 0 and "kernels-community" not in r.stdout + r.stderr
    config = tmp_path / "run.toml"
    save_config(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out", max_train_steps=1), config)
    r = run_cli("train", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kernels-community" not in r.stdout + r.stderr
    assert "kernels-community" not in (tmp_path / "out" / "lora" / "train.log").read_text()
