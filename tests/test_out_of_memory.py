"""Out of memory in each phase of a training (loading, caching, training, sampling; GPU and RAM) ends the run as
failed with a plain message naming the phase and, for the GPU, the estimate's cheapest changes that fit it."""
from __future__ import annotations

import json

import pytest
import torch

import core.train.memory_advice as advice
import core.train.sampling as sampling
from core.runs.reader import read_run
from core.train.trainer import Trainer
from train_helpers import tiny_config


def _gpu_oom(*a, **kw):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _ram_oom(*a, **kw):
    raise MemoryError()


@pytest.mark.parametrize("target, raise_, phase, gpu", [
    ("_load_model", _gpu_oom, "loading the model", True),
    ("_cache", _gpu_oom, "caching latents and text-encoder outputs", True),
    ("_micro_step", _gpu_oom, "training", True),
    ("make_samples", _gpu_oom, "making sample images", True),
    ("_micro_step", _ram_oom, "training", False),
])
def test_out_of_memory_names_the_phase_and_what_to_change(tiny_sd15, tiny_dataset, tmp_path, monkeypatch, target,
                                                          raise_, phase, gpu):
    monkeypatch.setattr(advice, "_gpu_gb", lambda: 0.9)  # as if on a card smaller than the estimate (1.0 GB)
    if target == "make_samples":
        monkeypatch.setattr(sampling, "make_samples", raise_)
    else:
        monkeypatch.setattr(Trainer, target, raise_)
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out", max_train_steps=4,
                      sample_prompts=["zqx --w 64 --h 64 --s 2"], sample_at_first=True)
    t = Trainer(cfg, echo=lambda m: None)
    assert t.train() == 1
    message = json.loads(t.run.status_file.read_text())["message"]
    what = "GPU memory" if gpu else "memory (RAM)"
    assert message.startswith(f"Out of {what} while {phase}."), message
    if gpu:
        assert "cheapest changes for 0.9 GB" in message and "gradient_checkpointing = True) -> 0.9" in message, message
        assert "--vram 0.9" in message
    else:
        assert "Close other programs" in message
    assert read_run(t.run.path).message == message
    assert "Traceback" in t.run.log_file.read_text()


def test_the_advice_without_an_estimate_is_the_general_one(tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out")
    text = advice.out_of_memory_message(torch.cuda.OutOfMemoryError("CUDA out of memory"), "training", cfg,
                                        vram_gb=None)
    assert text.startswith("Out of GPU memory while training.") and "train_batch_size" in text
