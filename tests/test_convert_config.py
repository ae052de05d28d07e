"""convert-config: kohya_ss GUI .json and sd-scripts .toml -> our TOML, with a report of what did not map."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from core import convert_config as cc
from core.config.toml_io import ConfigError, load_config, validate

DATA = Path(__file__).parent / "data"
GUI_SD15 = DATA / "kohya_gui_sd15_locon.json"
GUI_SDXL = DATA / "kohya_gui_sdxl_adafactor.json"
SD_TOML = DATA / "sd_scripts_lora.toml"
# The keys of kohya_ss's preset "flux1D - adamw8bit fp8.json" (presets/lora/) with the Flux/SD3 fields newer kohya_ss
# versions save with every config; own paths, and blocks_to_swap 10 as a 16 GB user would set it.
GUI_FLUX = DATA / "kohya_gui_flux1d_adamw8bit_fp8.json"
SD_FLUX_TOML = DATA / "sd_scripts_flux_lora.toml"
FLUX_KEYS = ("clip_l", "t5xxl", "ae", "timestep_sampling", "sigmoid_scale", "discrete_flow_shift",
             "model_prediction_type", "guidance_scale", "t5xxl_max_token_length", "flux_lora_layers")


def _write_and_load(tmp_path: Path, c: cc.Conversion):
    out = tmp_path / "run.toml"
    out.write_text(cc.render(c), encoding="utf-8")
    return load_config(out)


def _report(c: cc.Conversion) -> str:
    return "\n".join(c.report)


def _accounted(c: cc.Conversion, key: str) -> bool:
    """Every source key must end up somewhere visible: converted, noted, listed or ignored."""
    if key in c.origin.values() or key in c.unmapped or key in c.runtime or key in c.flux_sd3 or key in c.ignored:
        return True
    return any(re.search(rf"(^|[\s\"(]){re.escape(key)}\b", n) for n in c.notes + c.invalid)


def _make_dataset(root: Path, folders: dict[str, int]) -> None:
    for name, n in folders.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"{i}.png").write_bytes(b"")  # only counted, never opened
            (d / f"{i}.txt").write_text("zqx dog", encoding="utf-8")


# ----------------------------------------------------------------- kohya_ss GUI
def test_gui_sd15_locon_values():
    c = cc.convert_file(GUI_SD15)
    d = c.data
    assert c.kind == cc.KOHYA_GUI
    assert d["pretrained_model_name_or_path"] == "runwayml/stable-diffusion-v1-5"
    assert "model_family" not in d  # sdxl=false, v2=false: auto-detect
    assert d["resolution"] == "512,512"  # from max_resolution
    assert d["train_data_dir"] == "img" and d["output_dir"] == "./output" and d["output_name"] == "zqx_dog_v1"
    assert d["network_dim"] == 32 and d["network_alpha"] == 16.0
    assert d["conv_dim"] == 8 and d["conv_alpha"] == 4.0  # LoRA_type "Kohya LoCon"
    assert d["optimizer_type"] == "AdamW8bit"
    assert d["optimizer_args"] == ["weight_decay=0.01", "betas=0.9,0.99"]
    assert d["learning_rate"] == 1e-4 and d["unet_lr"] == 1e-4
    assert d["network_train_unet_only"] is True and "text_encoder_lr" not in d  # text_encoder_lr = 0
    assert d["max_train_epochs"] == 10 and "max_train_steps" not in d  # epoch wins over max_train_steps
    assert d["max_grad_norm"] == 0.5  # additional_parameters override the field
    assert d["keep_tokens"] == 1 and d["noise_offset"] == 0.05 and d["seed"] == 1234  # GUI strings -> numbers
    assert d["clip_skip"] == 2 and d["min_snr_gamma"] == 5.0 and d["caption_dropout_rate"] == 0.05
    assert d["mixed_precision"] == "bf16" and d["save_precision"] == "fp16"
    assert d["sdpa"] is True  # xformers = "xformers"
    assert d["sample_sampler"] == "heun"  # k_dpm_2 -> nearest
    assert d["sample_prompts"] == [
        "zqx dog sitting on a sofa --w 512 --h 512 --d 1 --s 20 --l 7",
        "zqx dog on the beach, sunset --n blurry --w 512 --h 512 --d 2",
    ]
    assert d["sample_every_n_epochs"] == 2 and d["save_every_n_epochs"] == 2
    assert d["training_comment"] == "trigger: zqx dog"
    validate(d)


def test_gui_sd15_report_and_unmapped():
    c = cc.convert_file(GUI_SD15)
    assert c.unmapped["color_aug"] is True
    assert c.data["scale_weight_norms"] == 1.0 and c.origin["scale_weight_norms"] == "scale_weight_norms"  # came in
    # through additional_parameters
    assert c.unmapped["max_train_steps"] == 1600
    assert c.unmapped["lr_warmup"] == 10  # no dataset here: total steps unknown
    assert "unknown" in c.reasons["lr_warmup"]
    assert set(c.runtime) == {"logging_dir", "max_data_loader_n_workers", "wandb_api_key"}
    text = _report(c)
    assert "NOT converted: color_aug = true" in text
    assert 'sample_sampler = "k_dpm_2" -> "heun"' in text
    assert "text_encoder_lr = 0 -> network_train_unet_only = true" in text
    # secrets never reach the report or the file
    assert "0123456789abcdef" not in text and "<hidden>" in text
    assert "0123456789abcdef" not in cc.render(c)
    # GUI noise is grouped in one line
    ignored = [ln for ln in c.report if ln.startswith("ignored")]
    assert len(ignored) == 1 and "huggingface_token" in ignored[0] and "conv_block_dims" in ignored[0]
    src = json.loads(GUI_SD15.read_text(encoding="utf-8"))
    missing = [k for k in src if not _accounted(c, k)]
    assert not missing, missing


def test_gui_lr_warmup_percent_computed_from_dataset(tmp_path):
    cfg = tmp_path / "kohya.json"
    shutil.copy(GUI_SD15, cfg)
    _make_dataset(tmp_path / "img", {"10_zqx dog": 5, "not_a_concept": 3})
    c = cc.convert_file(cfg)
    # 5 images x 10 repeats = 50 uses, batch 2 -> 25 steps per epoch, 10 epochs = 250 steps, 10% = 25
    assert c.data["lr_warmup_steps"] == 25
    assert "lr_warmup" not in c.unmapped
    assert any("lr_warmup_steps = 25 (of 250 steps" in n for n in c.notes)


def test_gui_sdxl_adafactor_values():
    c = cc.convert_file(GUI_SDXL)
    d = c.data
    assert d["model_family"] == "sdxl"
    assert d["resolution"] == "1024,1024"
    assert d["optimizer_type"] == "Adafactor"
    assert d["optimizer_args"] == ["scale_parameter=False", "relative_step=False", "warmup_init=False"]
    assert d["lr_scheduler"] == "constant_with_warmup"  # "adafactor" scheduler -> nearest
    assert d["learning_rate"] == d["unet_lr"] == d["text_encoder_lr"] == 3e-4
    assert "network_train_unet_only" not in d
    assert d["max_train_epochs"] == 12 and d["train_batch_size"] == 4 and d["bucket_reso_steps"] == 64
    assert d["gradient_accumulation_steps"] == 1 and d["cache_latents_to_disk"] is True
    assert "clip_skip" not in d and "seed" not in d  # SDXL ignores clip_skip; seed was empty
    assert "conv_dim" not in d  # LoRA_type Standard: the GUI's conv_dim is unused
    assert set(c.unmapped) >= {"lr_warmup", "sdxl_no_half_vae"}
    assert d["noise_offset"] == 0.0357 and d["adaptive_noise_scale"] == 0.00357
    assert "seed" in c.ignored and "conv_dim" in c.ignored
    src = json.loads(GUI_SDXL.read_text(encoding="utf-8"))
    missing = [k for k in src if not _accounted(c, k)]
    assert not missing, missing


@pytest.mark.parametrize("path", [GUI_SD15, GUI_SDXL, SD_TOML, GUI_FLUX, SD_FLUX_TOML])
def test_result_loads_with_load_config(tmp_path, path):
    c = cc.convert_file(path)
    cfg = _write_and_load(tmp_path, c)
    for key, value in c.data.items():
        assert getattr(cfg, key) == value, key


def test_non_flux_gui_configs_leave_the_flux_fields_alone():
    """The GUI writes its Flux fields (at their defaults) into every config: for SD ones they stay noise."""
    for path in (GUI_SD15, GUI_SDXL):
        c = cc.convert_file(path)
        assert not set(FLUX_KEYS) & set(c.data), path
        assert c.data.get("model_family") != "flux"
    c = cc.convert_file(GUI_SD15)
    assert {"ae", "clip_l", "t5xxl", "guidance_scale", "timestep_sampling", "discrete_flow_shift",
            "t5xxl_max_token_length", "flux1_checkbox"} <= set(c.ignored)
    assert not any("Flux" in ln for ln in c.report if not ln.startswith("ignored"))


# ----------------------------------------------------------------- Flux.1
def _gui_json(tmp_path: Path, data: dict, base: Path | None = GUI_FLUX) -> Path:
    src = json.loads(base.read_text(encoding="utf-8")) if base else {}
    p = tmp_path / "kohya_flux.json"
    p.write_text(json.dumps({**src, **data}), encoding="utf-8")
    return p


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
    assert "fp8_base" not in c.unmapped and "blocks_to_swap" not in c.unmapped
    assert c.unmapped["apply_t5_attn_mask"] is True
    assert c.data["cache_text_encoder_outputs_to_disk"] is True
    assert "Flux" in c.reasons["min_snr_gamma"] and "Flux" in c.reasons["noise_offset"]
    assert c.unmapped["full_bf16"] is True
    text = _report(c)
    assert 'fp8_base = true -> base_precision = "fp8"' in text
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
def test_sd_scripts_toml_values():
    c = cc.convert_file(SD_TOML)
    d = c.data
    assert c.kind == cc.SD_SCRIPTS
    assert d["pretrained_model_name_or_path"] == "/models/anything-v4.5.safetensors"
    assert d["network_dim"] == 16 and d["network_alpha"] == 8.0
    assert d["conv_dim"] == 4 and d["conv_alpha"] == 1.0  # from network_args
    assert d["optimizer_type"] == "AdamW8bit"  # "adamw8bit", case-insensitive
    assert d["optimizer_args"] == ["weight_decay=0.1", "betas=0.9,0.99"]
    assert d["unet_lr"] == 1e-4 and d["text_encoder_lr"] == 5e-5
    assert "learning_rate" not in d  # both part rates are set: sd-scripts' default is not needed
    assert d["lr_scheduler"] == "cosine_with_restarts" and d["lr_scheduler_num_cycles"] == 3
    assert d["max_train_steps"] == 2000
    assert d["lr_warmup_steps"] == 100  # 0.05 of 2000 steps
    assert d["resolution"] == "512,768" and d["caption_extension"] == ".txt" and d["keep_tokens"] == 1
    assert d["sdpa"] is True and d["clip_skip"] == 2 and d["seed"] == 31337
    assert d["sample_sampler"] == "euler_a"  # k_euler_a
    assert d["sample_every_n_steps"] == 250 and d["sample_every_n_epochs"] == 0
    assert d["sample_prompts"] == [
        "zqx, 1girl, looking at viewer, masterpiece --n lowres, bad anatomy --w 512 --h 768 --d 1 --l 7 --s 28",
        "zqx, 1girl, city street at night --n lowres --w 512 --h 768 --d 2",
    ]


def test_sd_scripts_toml_unmapped():
    c = cc.convert_file(SD_TOML)
    assert c.unmapped["dataset_config"] == "datasets/zqx.toml"
    assert c.unmapped["network_args down_lr_weight"].startswith("0.5,")
    assert c.unmapped["save_last_n_epochs"] == 3
    assert c.unmapped["max_token_length"] == 225
    assert set(c.runtime) == {"max_data_loader_n_workers", "persistent_data_loader_workers", "logging_dir", "log_with"}
    assert {"v2", "color_aug", "save_model_as"} <= set(c.ignored)
    text = _report(c)
    assert "NOT converted: max_token_length = 225" in text
    assert 'sample_sampler = "k_euler_a" -> "euler_a"' in text
    import tomllib

    src = cc.flatten(tomllib.loads(SD_TOML.read_text(encoding="utf-8")))
    missing = [k for k in src if not _accounted(c, k)]
    assert not missing, missing


def test_sd_scripts_defaults_filled_where_they_differ(tmp_path):
    p = tmp_path / "min.toml"
    p.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\nresolution = 512\n',
                 encoding="utf-8")
    d, report = cc.convert(p)
    assert d["network_dim"] == 4 and d["network_alpha"] == 1.0 and d["learning_rate"] == 2e-6
    assert d["caption_extension"] == ".caption" and d["enable_bucket"] is False
    assert d["max_train_steps"] == 1600 and d["sample_every_n_epochs"] == 0
    assert any("sd-scripts' own default" in ln for ln in report)
    assert any("mixed_precision is not in the file" in ln for ln in report)


def test_dataset_config_settings_used_and_subsets_listed(tmp_path):
    (tmp_path / "ds.toml").write_text(
        '[general]\nshuffle_caption = true\ncaption_extension = ".txt"\n\n'
        '[[datasets]]\nresolution = 768\nbatch_size = 3\n\n'
        '  [[datasets.subsets]]\n  image_dir = "/data/zqx"\n  num_repeats = 10\n  class_tokens = "zqx dog"\n',
        encoding="utf-8")
    p = tmp_path / "cfg.toml"
    p.write_text('dataset_config = "ds.toml"\nresolution = 512\nmax_train_epochs = 4\n', encoding="utf-8")
    c = cc.convert_file(p)
    assert c.data["resolution"] == "768" and c.data["train_batch_size"] == 3 and c.data["shuffle_caption"] is True
    reason = c.reasons["dataset_config"]
    assert "/data/zqx" in reason and "x10" in reason and "zqx dog" in reason


def test_prompt_file_toml(tmp_path):
    (tmp_path / "prompts.toml").write_text(
        '[prompt]\nwidth = 512\nheight = 768\nscale = 7.5\nsample_steps = 24\n\n'
        '[[prompt.subset]]\nprompt = "zqx dog, park"\nnegative_prompt = "blurry"\nseed = 3\n\n'
        '[[prompt.subset]]\nprompt = "zqx dog, snow"\n', encoding="utf-8")
    p = tmp_path / "cfg.toml"
    p.write_text('sample_prompts = "prompts.toml"\nmax_train_epochs = 1\n', encoding="utf-8")
    d, _ = cc.convert(p)
    assert d["sample_prompts"] == [
        "zqx dog, park --w 512 --h 768 --l 7.5 --s 24 --n blurry --d 3",
        "zqx dog, snow --w 512 --h 768 --l 7.5 --s 24",
    ]


def test_missing_prompt_file_is_reported(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text('sample_prompts = "nope/prompts.txt"\nmax_train_epochs = 1\n', encoding="utf-8")
    c = cc.convert_file(p)
    assert "sample_prompts" not in c.data and "not found" in c.reasons["sample_prompts"]


# ----------------------------------------------------------------- names
def _convert_toml(tmp_path: Path, text: str) -> cc.Conversion:
    p = tmp_path / "x.toml"
    p.write_text(text + "\nmax_train_epochs = 1\n", encoding="utf-8")
    return cc.convert_file(p)


@pytest.mark.parametrize("name, ours, extra_args", [
    ("adamw", "AdamW", []), ("AdamW8bit", "AdamW8bit", []), ("LION", "Lion", []), ("Prodigy", "Prodigy", []),
    ("AdaFactor", "Adafactor", []), ("lion8bit", "Lion8bit", []),
    ("PagedAdamW8bit", "AdamW8bit", ["is_paged=True"]),
    ("SGDNesterov", "SGD", ["nesterov=True", "momentum=0.9"]),
    ("DAdaptAdam", "Prodigy", []),
    ("bitsandbytes.optim.AdamW8bit", "AdamW8bit", []),
])
def test_optimizer_names(tmp_path, name, ours, extra_args):
    c = _convert_toml(tmp_path, f'optimizer_type = "{name}"')
    assert c.data["optimizer_type"] == ours
    assert c.data.get("optimizer_args", []) == extra_args


def test_unknown_optimizer_reported(tmp_path):
    c = _convert_toml(tmp_path, 'optimizer_type = "came_pytorch.CAME"')
    assert "optimizer_type" not in c.data and c.unmapped["optimizer_type"] == "came_pytorch.CAME"


def test_replaced_optimizer_drops_foreign_args(tmp_path):
    c = _convert_toml(tmp_path, 'optimizer_type = "DAdaptation"\n'
                                'optimizer_args = ["decouple=True", "weight_decay=0.01", "log_every=10"]')
    assert c.data["optimizer_args"] == ["decouple=True", "weight_decay=0.01"]
    assert c.unmapped["optimizer_args log_every"] == "log_every=10"


@pytest.mark.parametrize("name, ours", [
    ("euler_a", "euler_a"), ("k_euler_a", "euler_a"), ("k_euler", "euler"), ("ddim", "ddim"),
    ("dpmsolver++", "dpmsolver++"), ("dpmsolver", "dpmsolver++"), ("k_dpm_2", "heun"), ("dpm_2_a", "euler_a"),
    ("k_lms", "lms"), ("Euler a", "euler_a"), ("DPM++ 2M Karras", "dpm++2m_karras"),
])
def test_sampler_names(tmp_path, name, ours):
    c = _convert_toml(tmp_path, f'sample_sampler = "{name}"')
    assert c.data["sample_sampler"] == ours
    assert (name == ours) != any("sample_sampler" in n for n in c.notes)


def test_lycoris(tmp_path):
    c = _convert_toml(tmp_path, 'network_module = "lycoris.kohya"\n'
                                'network_args = ["algo=locon", "conv_dim=8", "conv_alpha=2", "dora_wd=True"]')
    assert c.data["conv_dim"] == 8 and c.data["conv_alpha"] == 2.0 and c.data["use_dora"] is True
    assert "network_module" not in c.unmapped
    assert c.data["network_type"] == "locon"
    c = _convert_toml(tmp_path, 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=loha", "conv_dim=4"]')
    assert c.data["network_type"] == "loha" and c.data["conv_dim"] == 4 and "network_module" not in c.unmapped
    c = _convert_toml(tmp_path, 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=glora", "conv_dim=4"]')
    assert "conv_dim" not in c.data and "network_type" not in c.data
    assert "network_module" in c.unmapped and c.unmapped["network_args conv_dim"] == "4"
    c = _convert_toml(tmp_path, 'network_module = "networks.dylora"')
    assert c.unmapped["network_module"] == "networks.dylora"


def test_gui_lora_types(tmp_path):
    base = {"LoRA_type": "LyCORIS/LoCon", "conv_dim": 16, "conv_alpha": 8, "epoch": 1, "network_dim": 8}
    p = tmp_path / "g.json"
    p.write_text(json.dumps(base), encoding="utf-8")
    c = cc.convert_file(p)
    assert c.data["conv_dim"] == 16 and c.data["conv_alpha"] == 8.0 and c.data["network_type"] == "locon"
    p.write_text(json.dumps({**base, "LoRA_type": "LyCORIS/GLoRA"}), encoding="utf-8")
    c = cc.convert_file(p)
    assert "conv_dim" not in c.data and c.unmapped["LoRA_type"] == "LyCORIS/GLoRA" and "GLoRA" in c.reasons["LoRA_type"]
    assert c.data["network_dim"] == 8 and "network_type" not in c.data


def test_invalid_values_left_out(tmp_path):
    c = _convert_toml(tmp_path, 'output_name = "a/b"\nclip_skip = 12\nresolution = "512,abc"\nkeep_tokens = 1.5\n'
                                'min_bucket_reso = 2048\nmax_bucket_reso = 1024\nlr_scheduler = "rex"\n'
                                'network_dim = 32')
    for key in ("output_name", "clip_skip", "resolution", "keep_tokens", "min_bucket_reso", "max_bucket_reso",
                "lr_scheduler"):
        assert key not in c.data, key
        assert any(key in ln for ln in c.invalid), key
    assert c.data["network_dim"] == 32
    _write_and_load(tmp_path, c)


# ----------------------------------------------------------------- helpers and CLI
def test_split_args_and_cli_args():
    assert cc.split_args("weight_decay=0.01 betas=(0.9, 0.99) decouple=True") == [
        "weight_decay=0.01", "betas=(0.9, 0.99)", "decouple=True"]
    assert cc.split_args("betas=0.9, 0.99 eps=1e-8") == ["betas=0.9,0.99", "eps=1e-8"]
    found, stray = cc.parse_cli_args('--network_args "conv_dim=4" "conv_alpha=1" --max_grad_norm=0 --no_half_vae x')
    assert found == {"network_args": ["conv_dim=4", "conv_alpha=1"], "max_grad_norm": "0", "no_half_vae": "x"}
    assert stray == []
    found, stray = cc.parse_cli_args("oops --flag")
    assert found == {"flag": True} and stray == ["oops"]


def test_main_prints_toml_and_report(tmp_path, capsys):
    assert cc.main([str(GUI_SD15)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# ")
    assert "# NOT converted: color_aug = true" in out  # the header keeps the report
    assert err.strip() and all(ln.startswith("# ") for ln in err.splitlines())
    (tmp_path / "run.toml").write_text(out, encoding="utf-8")
    assert load_config(tmp_path / "run.toml").conv_dim == 8


def test_main_output_file_and_cli_wiring(tmp_path, capsys):
    from core.cli import main as cli_main

    target = tmp_path / "run.toml"
    assert cli_main(["convert-config", str(SD_TOML), "-o", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "written to" in err
    assert load_config(target).max_train_steps == 2000


def test_unreadable_sources(tmp_path, capsys):
    with pytest.raises(ConfigError):
        cc.convert(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert cc.main([str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_fp8_base_maps_to_base_precision_for_sd_configs(tmp_path):
    src = tmp_path / "sdxl.toml"
    src.write_text('pretrained_model_name_or_path = "/models/sdxl.safetensors"\nnetwork_module = "networks.lora"\n'
                   'fp8_base = true\ngradient_checkpointing = true\n', encoding="utf-8")
    c = cc.convert_file(src)
    assert c.data["base_precision"] == "fp8" and "fp8_base" not in c.unmapped
    assert 'fp8_base = true -> base_precision = "fp8"' in _report(c)
    g = cc.convert_file(_gui_json(tmp_path, {"fp8_base": True}))
    assert g.data["base_precision"] == "fp8"
    off = cc.convert_file(_gui_json(tmp_path, {"fp8_base": False}))
    assert "base_precision" not in off.data and "fp8_base" in off.ignored
