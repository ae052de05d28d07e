"""convert-config on Flux.1 configs: kohya_ss GUI presets and sd-scripts TOML (values, defaults, report)."""
from __future__ import annotations

import json

import pytest

from core import convert_config as cc
from core.config.toml_io import validate
from test_convert_config import (FLUX_KEYS, GUI_FLUX, SD_FLUX_TOML, _accounted, _convert_toml, _gui_json, _report,
                                 _write_and_load)


# ----------------------------------------------------------------- Flux.1


def test_gui_flux1d_preset_values(tmp_path):
    c = cc.convert_file(GUI_FLUX)
    d = c.data
    assert c.kind == cc.KOHYA_GUI
    assert d["model_family"] == "flux"
    assert d["pretrained_model_name_or_path"] == "/models/flux/flux1-dev.safetensors"
    assert d["clip_l"] == "/models/flux/clip_l.safetensors" and d["ae"] == "/models/flux/ae.safetensors"
    assert d["t5xxl"] == "/models/flux/t5xxl_fp16.safetensors"
    assert d["timestep_sampling"] == "sigmoid" and d["model_prediction_type"] == "raw"
    assert d["guidance_scale"] == 1.0 and d["sigmoid_scale"] == 1.0
    # kohya_ss's (= sd-scripts') defaults, different from ours: kept, not dropped as GUI noise
    assert d["discrete_flow_shift"] == 3.0 and d["t5xxl_max_token_length"] == 512
    assert d["network_dim"] == 16 and d["network_alpha"] == 16.0  # LoRA_type "Flux1": a standard LoRA
    assert d["network_train_unet_only"] is True  # text_encoder_lr = 0: CLIP-L is not trained
    assert d["cache_text_encoder_outputs"] is True  # flux1_cache_text_encoder_outputs
    assert d["optimizer_type"] == "AdamW8bit" and d["learning_rate"] == d["unet_lr"] == 3e-4
    assert d["mixed_precision"] == "bf16" and d["resolution"] == "512,512" and d["sdpa"] is True
    for key in ("min_snr_gamma", "noise_offset", "clip_skip", "conv_dim", "conv_alpha", "v_parameterization", "vae"):
        assert key not in d, key  # SD settings: of no use for Flux
    # --l is true CFG in sd-scripts' Flux sampling, here it would be read as the guidance: removed
    assert d["sample_prompts"] == [
        "zqx posing under a stormy lightning sky, photorealistic --w 832 --h 1216 --s 20 --d 42"]
    cfg = _write_and_load(tmp_path, c)
    assert cfg.model_family == "flux" and cfg.discrete_flow_shift == 3.0 and cfg.t5xxl_max_token_length == 512


def test_gui_flux1d_preset_report():
    c = cc.convert_file(GUI_FLUX)
    assert c.data["base_precision"] == "fp8" and c.data["blocks_to_swap"] == 10
    assert c.data["t5xxl_precision"] == "fp8"  # fp8_base without fp8_base_unet: sd-scripts' T5 is fp8 too
    assert "fp8_base" not in c.unmapped and "blocks_to_swap" not in c.unmapped
    assert c.unmapped["apply_t5_attn_mask"] is True
    assert c.data["cache_text_encoder_outputs_to_disk"] is True
    assert "Flux" in c.reasons["min_snr_gamma"] and "Flux" in c.reasons["noise_offset"]
    assert c.unmapped["full_bf16"] is True
    text = _report(c)
    assert 'fp8_base = true -> base_precision = "fp8"' in text
    assert 'fp8_base = true (Flux) -> t5xxl_precision = "fp8": T5-XXL in fp8 while the captions are cached' in text
    assert "blocks_to_swap = 10: the same count of Flux blocks" in text
    assert 'flux1_checkbox = true -> model_family = "flux"' in text
    assert "discrete_flow_shift = 3.0, t5xxl_max_token_length = 512: kohya_ss's Flux defaults" in text
    assert "--l 4 removed" in text
    assert not c.flux_sd3 and "SD3 is not supported" not in text
    # off / default Flux options are simply ignored
    assert {"train_blocks", "split_mode", "train_t5xxl", "t5xxl_lr", "fp8_base_unet", "cpu_offload_checkpointing",
            "split_qkv", "img_attn_dim", "train_double_block_indices", "weighting_scheme", "t5xxl_dtype",
            "model_type", "sdxl_cache_text_encoder_outputs", "conv_dim"} <= set(c.ignored)
    src = json.loads(GUI_FLUX.read_text(encoding="utf-8"))
    missing = [k for k in src if not _accounted(c, k)]
    assert not missing, missing


def test_gui_flux_gui_defaults_are_written_explicitly(tmp_path):
    """GUI defaults are sd-scripts' defaults: for Flux they are the real settings, and ours differ."""
    defaults = {"timestep_sampling": "sigma", "model_prediction_type": "sigma_scaled", "discrete_flow_shift": 3,
                "guidance_scale": 3.5, "t5xxl_max_token_length": 512}
    c = cc.convert_file(_gui_json(tmp_path, defaults))
    for key, value in defaults.items():
        assert c.data[key] == value, key
        assert key not in c.ignored, key
    assert "timestep_sampling = \"sigma\"" in _report(c)
    text = cc.render(c)
    assert 'timestep_sampling = "sigma"' in text and 'model_prediction_type = "sigma_scaled"' in text
    assert "discrete_flow_shift = 3.0" in text and "guidance_scale = 3.5" in text
    assert "t5xxl_max_token_length = 512" in text
    # an older GUI config without the Flux fields: kohya_ss loads it with these same defaults
    src = {k: v for k, v in json.loads(GUI_FLUX.read_text(encoding="utf-8")).items() if k not in defaults}
    c = cc.convert_file(_gui_json(tmp_path, src, base=None))
    assert {k: c.data[k] for k in defaults} == {**defaults, "discrete_flow_shift": 3.0}
    assert any("kohya_ss's Flux default applies" in n for n in c.notes)


def test_gui_flux_from_lora_type_and_family_conflicts(tmp_path):
    c = cc.convert_file(_gui_json(tmp_path, {"flux1_checkbox": False}))  # LoRA_type "Flux1" alone
    assert c.data["model_family"] == "flux"
    c = cc.convert_file(_gui_json(tmp_path, {"sdxl": True}))  # kohya_ss runs sdxl_train_network.py then
    assert c.data["model_family"] == "sdxl" and "flux1_checkbox" in c.unmapped
    assert not set(FLUX_KEYS) & set(c.data)
    c = cc.convert_file(_gui_json(tmp_path, {"flux1_checkbox": False, "sd3_checkbox": True}))
    assert "model_family" not in c.data and "sd3_checkbox" in c.unmapped and c.flux_sd3
    assert "SD3" in c.reasons["sd3_checkbox"]


def test_gui_flux_options_we_lack(tmp_path):
    c = cc.convert_file(_gui_json(tmp_path, {
        "train_t5xxl": True, "t5xxl_lr": 1e-5, "train_blocks": "double", "cpu_offload_checkpointing": True,
        "fp8_base_unet": True, "single_blocks_to_swap": 4, "enable_all_linear": True, "img_attn_dim": "8",
        "in_dims": "[4,0,0,0,0]", "train_single_block_indices": "0-9", "split_qkv": True, "model_type": "chroma",
        "vae": "/models/sdxl_vae.safetensors", "clip_skip": 2, "v_parameterization": True}))
    r = c.reasons
    assert "T5 is never trained" in r["train_t5xxl"] and "T5 is never trained" in r["t5xxl_lr"]
    assert "double blocks" in r["train_blocks"] and "all double and single blocks" in r["train_blocks"]
    for key in ("cpu_offload_checkpointing", "single_blocks_to_swap"):
        assert r[key].startswith("low-VRAM option not available here"), key
    assert c.data["base_precision"] == "fp8" and "fp8_base_unet" not in c.unmapped
    assert "t5xxl_precision" not in c.data  # fp8_base_unet: only the transformer in fp8, T5 in bf16 (sd-scripts)
    assert any(n.startswith("fp8_base_unet = true: only the transformer in fp8") and "t5xxl_precision" in n
               for n in c.notes)
    assert "OFT" in r["enable_all_linear"] and "network_dim" in r["img_attn_dim"] and "input layers" in r["in_dims"]
    assert "some blocks" in r["train_single_block_indices"] and "Chroma" in r["model_type"]
    assert "ae" in r["vae"] and "Flux" in r["clip_skip"] and "Flux" in r["v_parameterization"]
    assert any("split_qkv = true" in n and "separate LoRAs" in n for n in c.notes)
    assert c.data["model_family"] == "flux" and "vae" not in c.data and "clip_skip" not in c.data
    # split_mode also makes kohya_ss train only the single blocks
    c = cc.convert_file(_gui_json(tmp_path, {"split_mode": True}))
    assert "split_mode" in c.unmapped and "single blocks" in c.reasons["train_blocks"]


def test_gui_flux_network_types(tmp_path):
    c = cc.convert_file(_gui_json(tmp_path, {"LoRA_type": "Flux1 OFT"}))
    assert c.unmapped["LoRA_type"] == "Flux1 OFT" and "OFT" in c.reasons["LoRA_type"]
    assert c.data["model_family"] == "flux" and c.data["network_dim"] == 16
    c = cc.convert_file(_gui_json(tmp_path, {"LoRA_type": "LyCORIS/LoCon", "conv_dim": 8, "conv_alpha": 4}))
    assert "conv_dim" not in c.data and "convolution" in c.reasons["conv_dim"]


def test_gui_flux_invalid_values_reported_with_reason(tmp_path):
    c = cc.convert_file(_gui_json(tmp_path, {"timestep_sampling": "logit", "t5xxl_max_token_length": 8,
                                             "discrete_flow_shift": -1, "guidance_scale": "abc"}))
    for key in ("timestep_sampling", "t5xxl_max_token_length", "discrete_flow_shift", "guidance_scale"):
        assert key not in c.data, key
        assert key in c.unmapped and c.reasons[key].startswith("not accepted here"), key
    assert "shift" in c.reasons["timestep_sampling"] and "16-512" in c.reasons["t5xxl_max_token_length"]
    validate(c.data)


def test_sd_scripts_flux_toml_values_and_defaults(tmp_path):
    c = cc.convert_file(SD_FLUX_TOML)
    d = c.data
    assert c.kind == cc.SD_SCRIPTS and d["model_family"] == "flux"
    assert d["clip_l"] == "/models/flux/clip_l.safetensors" and d["t5xxl"] == "/models/flux/t5xxl_fp16.safetensors"
    assert d["ae"] == "/models/flux/ae.safetensors"
    # left out of the file: sd-scripts' argparse defaults, written explicitly
    assert d["timestep_sampling"] == "sigma" and d["model_prediction_type"] == "sigma_scaled"
    assert d["discrete_flow_shift"] == 3.0 and d["guidance_scale"] == 3.5 and d["t5xxl_max_token_length"] == 0
    assert d["network_dim"] == 16 and d["network_alpha"] == 16.0 and d["network_train_unet_only"] is True
    assert d["learning_rate"] == 1e-4 and d["optimizer_type"] == "AdamW8bit" and d["max_train_epochs"] == 16
    assert d["cache_text_encoder_outputs"] is True and d["resolution"] == "1024,1024"
    assert "sample_sampler" not in d  # Flux samples with its own sampler: sd-scripts' ddim default is not needed
    # prompt file: guidance_scale is --g; --l (true CFG) removed
    assert d["sample_prompts"] == ["zqx dog in a park --w 1024 --h 1024 --s 20 --g 3.5 --d 1",
                                   "zqx dog in the snow --w 1024 --h 1024 --s 20"]
    text = "\n".join(c.report)
    assert 'network_module = "networks.lora_flux" -> model_family = "flux"' in text
    assert "sd-scripts' Flux default applies" in text and 'timestep_sampling = "sigma"' in text
    assert "network_module" not in c.unmapped  # networks.lora_flux: a standard LoRA for Flux
    assert c.data["base_precision"] == "fp8" and c.data["blocks_to_swap"] == 18 and "fp8_base" not in c.unmapped
    assert c.data["t5xxl_precision"] == "fp8"
    assert c.unmapped["network_args train_blocks"] == "single"
    assert "network_dim" in c.reasons["network_args img_mlp_dim"]
    assert c.unmapped["apply_t5_attn_mask"] is True and c.data["cache_text_encoder_outputs_to_disk"] is True
    assert "network_args train_t5xxl" in c.ignored
    assert any("network_args split_qkv" in n for n in c.notes)
    import tomllib

    src = cc.flatten(tomllib.loads(SD_FLUX_TOML.read_text(encoding="utf-8")))
    missing = [k for k in src if not _accounted(c, k)]
    assert not missing, missing
    cfg = _write_and_load(tmp_path, c)
    assert cfg.model_family == "flux" and cfg.guidance_scale == 3.5 and cfg.timestep_sampling == "sigma"


@pytest.mark.parametrize("text, flux", [
    ('network_module = "networks.lora_flux"', True),
    ('ae = "ae.safetensors"', True),
    ('clip_l = "clip_l.safetensors"\nt5xxl = "t5xxl.safetensors"', True),
    ('clip_l = "clip_l.safetensors"\nclip_g = "clip_g.safetensors"\nt5xxl = "t5.safetensors"', False),  # SD3
    ('guidance_scale = 3.5\ntimestep_sampling = "shift"', False),  # stray Flux options in an SD file
    ('network_module = "networks.lora"', False),
])
def test_sd_scripts_flux_detection(tmp_path, text, flux):
    c = _convert_toml(tmp_path, text)
    assert (c.data.get("model_family") == "flux") is flux
    if not flux:
        assert not set(FLUX_KEYS) & set(c.data)


def test_sd_scripts_flux_values_and_rates(tmp_path):
    c = _convert_toml(tmp_path, 'network_module = "networks.lora_flux"\ntimestep_sampling = "Shift"\n'
                                'discrete_flow_shift = 3.1582\nmodel_prediction_type = "raw"\nguidance_scale = 1.0\n'
                                't5xxl_max_token_length = 256\ntext_encoder_lr = [5e-5, 1e-5]\n'
                                'weighting_scheme = "logit_normal"\nlogit_std = 1.2\nmin_snr_gamma = 5\n'
                                'network_args = ["conv_dim=4", "train_blocks=all"]')
    d = c.data
    assert d["timestep_sampling"] == "shift" and d["discrete_flow_shift"] == 3.1582
    assert d["model_prediction_type"] == "raw" and d["guidance_scale"] == 1.0 and d["t5xxl_max_token_length"] == 256
    assert d["text_encoder_lr"] == 5e-5  # CLIP-L's; the second rate is T5's
    assert any("for CLIP-L" in n for n in c.notes)
    assert "weighting_scheme" in c.unmapped and "logit_std" in c.unmapped and "min_snr_gamma" in c.unmapped
    assert "convolution" in c.reasons["network_args conv_dim"] and "network_args train_blocks" in c.ignored
    c = _convert_toml(tmp_path, 'network_module = "networks.oft_flux"')
    assert c.data["model_family"] == "flux" and "OFT" in c.reasons["network_module"]


# ----------------------------------------------------------------- sd-scripts TOML
