"""Bad configs, folders and model files end with a message that names the problem and the fix."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from core.config.toml_io import ConfigError, load_config, validate
from core.train.trainer import Trainer
from train_helpers import run_cli, tiny_config


def test_unknown_keys_and_bad_values_get_one_line_each(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('netwrk_dim = 8\nlearning_rate = -1\noptimizer_type = "adam"\nresolution = "big"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    lines = e.value.lines
    assert len(lines) == 4
    assert "unknown key 'netwrk_dim' (did you mean 'network_dim'?)" in lines
    assert any(line.startswith("learning_rate = -1:") and "> 0.0" in line for line in lines)
    assert any(line.startswith("optimizer_type = 'adam':") and "AdamW8bit" in line for line in lines)
    assert any(line.startswith("resolution = 'big':") and "width,height" in line for line in lines)


def test_cli_reports_config_errors_and_exits_2(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text("max_train_epoch = 3\n")
    r = run_cli("train", "--config", str(p))
    assert r.returncode == 2
    assert "unknown key 'max_train_epoch' (did you mean 'max_train_epochs'?)" in r.stderr
    r = run_cli("train", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "config file not found" in r.stderr
    p.write_text("this is = = not toml")
    r = run_cli("train", "--config", str(p))
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_sections_and_set_overrides(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('[network]\nnetwork_dim = 8\n[data]\nresolution = [768, 512]\n')
    cfg = load_config(p, ["network_alpha=4", "sample_prompts=a cat|a dog", "unet_lr=none"])
    assert (cfg.network_dim, cfg.network_alpha, cfg.resolution_wh) == (8, 4.0, (768, 512))
    assert cfg.sample_prompts == ["a cat", "a dog"] and cfg.unet_lr is None
    with pytest.raises(ConfigError, match="choose one"):
        validate({"network_train_unet_only": True, "network_train_text_encoder_only": True})


def _fail(cfg) -> str:
    t = Trainer(cfg, echo=lambda m: None)
    code = t.train()
    assert code == 2
    events = [json.loads(x) for x in (t.run.events_file).read_text().splitlines()]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed" and events[-1]["exit_code"] == 2
    assert json.loads(t.run.status_file.read_text())["status"] == "failed"
    return events[-1]["message"]


def test_folder_without_repeats_prefix_explains_the_convention(tiny_sd15, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset / "10_zqx", data / "zqx")
    msg = _fail(tiny_config(tiny_sd15, data, tmp_path / "out"))
    assert "'<repeats>_<name>'" in msg and "10_zqx" in msg and "folders without that prefix: zqx" in msg
    loose = tmp_path / "loose"
    shutil.copytree(tiny_dataset / "10_zqx", loose)
    msg = _fail(tiny_config(tiny_sd15, loose, tmp_path / "out2"))
    assert "images directly in" in msg


def test_unreadable_image_is_named(tiny_sd15, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "10_zqx" / "broken.png").write_bytes(b"not an image at all")
    msg = _fail(tiny_config(tiny_sd15, data, tmp_path / "out"))
    assert "broken.png" in msg and "cannot be read as an image" in msg


def test_empty_dataset_and_missing_folder(tiny_sd15, tmp_path):
    (tmp_path / "data" / "5_x").mkdir(parents=True)
    assert "No training images" in _fail(tiny_config(tiny_sd15, tmp_path / "data", tmp_path / "out"))
    assert "folder not found" in _fail(tiny_config(tiny_sd15, tmp_path / "nope", tmp_path / "out2"))


def test_lora_given_as_base_model(tiny_dataset, tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "some_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, lora)
    msg = _fail(tiny_config(lora, tiny_dataset, tmp_path / "out"))
    assert "some_lora.safetensors" in msg and "LoRA" in msg


def test_truncated_download(tiny_sd15, tiny_dataset, tmp_path):
    from safetensors.torch import save_file

    full = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, full)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    msg = _fail(tiny_config(full, tiny_dataset, tmp_path / "out"))
    assert "truncated" in msg and "download it again" in msg


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_needing_code_is_refused(tiny_dataset, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Evil()}, ckpt)
    msg = _fail(tiny_config(ckpt, tiny_dataset, tmp_path / "out"))
    assert "model.ckpt" in msg and "safetensors" in msg


def test_missing_model_and_offline_hub_id(tiny_dataset, tmp_path):
    msg = _fail(tiny_config(tmp_path / "nowhere.safetensors", tiny_dataset, tmp_path / "out"))
    assert "not found" in msg
    msg = _fail(tiny_config("someone/not-downloaded-model", tiny_dataset, tmp_path / "out2"))
    assert "someone/not-downloaded-model" in msg and "single-file .safetensors" in msg


def test_refuses_eight_bit_optimizer_without_gpu(tiny_sd15, tiny_dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    msg = _fail(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out", optimizer_type="AdamW8bit"))
    assert "needs an NVIDIA GPU" in msg


def test_nan_loss_stops_with_a_clear_error_and_keeps_last_good_files(tiny_sd15, tiny_dataset, tmp_path, monkeypatch):
    import core.train.trainer as trainer_mod

    real_load = trainer_mod.load_components

    def load_with_diverging_unet(*a, **kw):
        comps = real_load(*a, **kw)
        forward, calls = comps.denoiser.forward, [0]

        def diverging(*args, **kwargs):
            out = forward(*args, **kwargs)
            calls[0] += 1
            if calls[0] > 6:  # from the 7th step on the model blows up, as with a far too high LR
                out.sample = out.sample * float("nan")
            return out

        comps.denoiser.forward = diverging
        return comps

    monkeypatch.setattr(trainer_mod, "load_components", load_with_diverging_unet)
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out", max_train_steps=20, save_state_every_n_steps=5)
    t = Trainer(cfg, echo=lambda m: None)
    assert t.train() == 1
    events = [json.loads(x) for x in t.run.events_file.read_text().splitlines()]
    assert events[-1]["status"] == "failed" and "training diverged" in events[-1]["message"]
    assert "step 7" in events[-1]["message"] and "Lower learning_rate" in events[-1]["message"]
    assert json.loads((t.run.state / "trainer.json").read_text())["global_step"] == 5, "the last good state is kept"
    assert not (tmp_path / "out" / "lora.safetensors").exists()


def test_out_of_memory_names_the_settings_to_lower(tiny_sd15, tiny_dataset, tmp_path, monkeypatch):
    import core.train.trainer as trainer_mod

    def oom(*a, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_mod.Trainer, "_micro_step", oom)
    t = Trainer(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "out"), echo=lambda m: None)
    assert t.train() == 1
    end = [json.loads(x) for x in t.run.events_file.read_text().splitlines()][-1]
    assert end["status"] == "failed"
    for setting in ("train_batch_size", "gradient_checkpointing", "cache_latents", "AdamW8bit"):
        assert setting in end["message"]


def test_run_that_failed_loading_its_base_model_is_started_again_without_overwrite(tiny_sd15, tiny_dataset, tmp_path):
    """The CLI path of the 'failed before training' rule (core.runs.replace.replaceable_run_note)."""
    from core.config.toml_io import save_config

    out, config = tmp_path / "out", tmp_path / "run.toml"
    save_config(tiny_config(tmp_path / "nowhere.safetensors", tiny_dataset, out, max_train_steps=2), config)
    r = run_cli("train", "--config", str(config))
    assert r.returncode == 2 and "not found" in r.stdout, r.stdout + r.stderr

    save_config(tiny_config(tiny_sd15, tiny_dataset, out, max_train_steps=2), config)  # the fix
    r = run_cli("train", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "lora" / "train.log").read_text()
    note = "The previous attempt at this run failed before training ("
    assert note in r.stdout and note in log and "nowhere.safetensors" in log.split(note)[1].split("\n")[0]
    events = [json.loads(x) for x in (out / "lora" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("start") == 1 and events[-1]["status"] == "completed"
    assert not [e for e in events if e["type"] == "error"], "the failed attempt's events were replaced"

    before = (out / "lora" / "events.jsonl").read_bytes()
    r = run_cli("train", "--config", str(config))  # a run that trained stays protected
    assert r.returncode == 2 and "already holds a run" in r.stdout + r.stderr, r.stdout + r.stderr
    assert (out / "lora" / "events.jsonl").read_bytes() == before and (out / "lora.safetensors").is_file()
