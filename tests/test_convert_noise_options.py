"""convert-config: sd-scripts' noise, loss and regularisation options from kohya_ss presets and sd-scripts TOML.

tests/data/kohya_presets/ holds presets as kohya_ss ships them (presets/lora/ of bmaltais/kohya_ss at
ed55e81997e529ea6f32c692d75b386c993db0e3, renamed without spaces): "SDXL - LoRA AI_Now ADamW v1.0",
"SDXL - edgLoRAXL", "SDXL - 1 image LoRA v1.0", "SDXL - LoKR v1.0", "sd15 - LoKr v1.1",
"SDXL - LoRA face dogu_cat v1.0".
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import convert_config as cc
from core.config.toml_io import validate
from core.convert_config.noise import KEYS

DATA = Path(__file__).parent / "data"
PRESETS = DATA / "kohya_presets"
GUI_FIXTURES = sorted(PRESETS.glob("*.json")) + [DATA / "kohya_gui_sdxl_adafactor.json", DATA / "kohya_gui_sd15_locon.json",
                                                 DATA / "kohya_gui_flux1d_adamw8bit_fp8.json"]
OPTION_KEYS = ("noise_offset_type",) + KEYS

EXPECTED = {  # what kohya_ss passes to sd-scripts for each preset
    "sdxl_ai_now_adamw_v1.0.json": dict(noise_offset=0.0375, adaptive_noise_scale=0.00375, min_timestep=100,
                                        max_timestep=900),
    "sdxl_edgloraxl.json": dict(noise_offset=0.0357, scale_weight_norms=1.0),  # multires 8 unused: type Original
    "sdxl_1_image_lora_v1.0.json": dict(multires_noise_iterations=5, multires_noise_discount=0.1,
                                        debiased_estimation_loss=True),
    "sdxl_lokr_v1.0.json": dict(multires_noise_iterations=8, multires_noise_discount=0.2, rank_dropout=0.1,
                                module_dropout=0.1),  # noise_offset 0.0357 unused: type Multires
    "sd15_lokr_v1.1.json": dict(multires_noise_iterations=10, multires_noise_discount=0.3, scale_weight_norms=1.0),
    "sdxl_face_dogu_cat_v1.0.json": dict(noise_offset=0.0357, adaptive_noise_scale=0.00357, scale_weight_norms=1.0),
}


@pytest.mark.parametrize("path", GUI_FIXTURES, ids=lambda p: p.name)
def test_every_option_key_of_kohya_configs_is_mapped(path):
    c = cc.convert_file(path)
    src = json.loads(path.read_text(encoding="utf-8"))
    present = [k for k in OPTION_KEYS if k in src]
    assert len(present) >= 10, present  # the presets do hold these keys
    for key in present:
        assert key not in c.unmapped or c.reasons[key].startswith(key + " does not apply to Flux"), (key, c.reasons)
        converted = key in c.origin.values()
        ignored = key in c.ignored
        noted = any(key in n for n in c.notes)
        assert converted or ignored or noted or key in c.unmapped, key
    got = {k: v for k, v in c.data.items() if k in KEYS}
    if path.name in EXPECTED:
        assert got == EXPECTED[path.name]
    validate(c.data)


def test_noise_offset_type_decides_which_settings_kohya_ss_passes():
    c = cc.convert_file(PRESETS / "sdxl_lokr_v1.0.json")
    assert "noise_offset" not in c.data and "noise_offset" not in c.unmapped
    assert any('noise_offset_type = "Multires"' in n and "noise_offset = 0.0357" in n for n in c.notes)
    c = cc.convert_file(PRESETS / "sdxl_edgloraxl.json")
    assert "multires_noise_iterations" not in c.data
    assert any('noise_offset_type = "Original"' in n and "multires_noise_iterations = 8" in n for n in c.notes)
    c = cc.convert_file(PRESETS / "sdxl_1_image_lora_v1.0.json")
    assert any('noise_offset_type = "Multires" -> multires_noise_iterations' in n for n in c.notes)


def test_options_that_are_off_are_not_written(tmp_path):
    src = json.loads((PRESETS / "sdxl_ai_now_adamw_v1.0.json").read_text(encoding="utf-8"))
    src.update(noise_offset=0, adaptive_noise_scale=0, min_timestep=0, max_timestep=1000, scale_weight_norms=0,
               rank_dropout=0, module_dropout=0, multires_noise_iterations=0, multires_noise_discount=0.3,
               ip_noise_gamma=0, ip_noise_gamma_random_strength=True, noise_offset_random_strength=True,
               debiased_estimation_loss=False)
    p = tmp_path / "off.json"
    p.write_text(json.dumps(src), encoding="utf-8")
    c = cc.convert_file(p)
    assert not [k for k in c.data if k in KEYS]
    assert not [k for k in c.unmapped if k in OPTION_KEYS]
    # max_timestep 0 is kohya_ss's "not set" too; adaptive_noise_scale without noise_offset is refused by sd-scripts
    src.update(max_timestep=0, adaptive_noise_scale=0.01, ip_noise_gamma=0.1)
    p.write_text(json.dumps(src), encoding="utf-8")
    c = cc.convert_file(p)
    assert "max_timestep" not in c.data and "max_timestep" in c.ignored
    assert "adaptive_noise_scale" in c.unmapped and "needs noise_offset" in c.reasons["adaptive_noise_scale"]
    assert c.data["ip_noise_gamma"] == 0.1 and c.data["ip_noise_gamma_random_strength"] is True


def test_sd_scripts_toml_options_and_network_args(tmp_path):
    p = tmp_path / "train.toml"
    p.write_text("""
pretrained_model_name_or_path = "model.safetensors"
train_data_dir = "img"
network_module = "networks.lora"
network_dim = 16
network_alpha = 8
network_args = ["rank_dropout=0.15", "module_dropout=0.05", "conv_dim=4"]
noise_offset = 0.1
adaptive_noise_scale = 0.01
noise_offset_random_strength = true
multires_noise_iterations = 6
multires_noise_discount = 0.25
ip_noise_gamma = 0.05
ip_noise_gamma_random_strength = true
debiased_estimation_loss = true
min_timestep = 20
max_timestep = 980
scale_weight_norms = 2.0
""", encoding="utf-8")
    c = cc.convert_file(p)
    d = c.data
    assert c.kind == cc.SD_SCRIPTS
    assert {k: d[k] for k in KEYS if k in d} == dict(
        noise_offset=0.1, adaptive_noise_scale=0.01, noise_offset_random_strength=True, multires_noise_iterations=6,
        multires_noise_discount=0.25, ip_noise_gamma=0.05, ip_noise_gamma_random_strength=True,
        debiased_estimation_loss=True, min_timestep=20, max_timestep=980, scale_weight_norms=2.0, rank_dropout=0.15,
        module_dropout=0.05)
    assert d["conv_dim"] == 4
    assert not [k for k in c.unmapped if k in KEYS or k.startswith("network_args")]
    assert any("network_args rank_dropout=0.15 -> rank_dropout = 0.15" in n for n in c.notes)
    validate(d)


def test_flux_configs_keep_what_flux_training_uses(tmp_path):
    src = json.loads((DATA / "kohya_gui_flux1d_adamw8bit_fp8.json").read_text(encoding="utf-8"))
    src.update(ip_noise_gamma=0.1, scale_weight_norms=1.5, rank_dropout=0.1, module_dropout=0.2, min_timestep=100,
               debiased_estimation_loss=True, multires_noise_iterations=6, noise_offset_type="Multires")
    p = tmp_path / "flux.json"
    p.write_text(json.dumps(src), encoding="utf-8")
    c = cc.convert_file(p)
    assert c.data["model_family"] == "flux"
    assert {k: c.data[k] for k in KEYS if k in c.data} == dict(ip_noise_gamma=0.1, scale_weight_norms=1.5,
                                                                rank_dropout=0.1, module_dropout=0.2)
    for key in ("min_timestep", "debiased_estimation_loss", "multires_noise_iterations", "multires_noise_discount"):
        assert "does not apply to Flux" in c.reasons[key], key
    assert "max_timestep" in c.ignored and "noise_offset_type" in c.ignored
