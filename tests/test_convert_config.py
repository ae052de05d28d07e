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


def _gui_json(tmp_path: Path, data: dict, base: Path | None = GUI_FLUX) -> Path:
    src = json.loads(base.read_text(encoding="utf-8")) if base else {}
    p = tmp_path / "kohya_flux.json"
    p.write_text(json.dumps({**src, **data}), encoding="utf-8")
    return p


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
    assert "t5xxl_precision" not in c.data  # no T5 in an SD model
    assert 'fp8_base = true -> base_precision = "fp8"' in _report(c)
    g = cc.convert_file(_gui_json(tmp_path, {"fp8_base": True}))
    assert g.data["base_precision"] == "fp8"
    off = cc.convert_file(_gui_json(tmp_path, {"fp8_base": False}))
    assert "base_precision" not in off.data and "fp8_base" in off.ignored
