"""convert-config: sd-scripts' masked loss (masked_loss, alpha_mask, a dataset config's conditioning_data_dir)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import convert_config as cc
from core.config.toml_io import validate

DATA = Path(__file__).parent / "data"
PRESET = DATA / "kohya_presets" / "sdxl_face_dogu_cat_v1.0.json"  # a kohya_ss preset as shipped
GUI_FIXTURES = [DATA / "kohya_gui_sd15_locon.json", DATA / "kohya_gui_flux1d_adamw8bit_fp8.json"]


def _gui(tmp_path: Path, **changes) -> Path:
    src = json.loads(PRESET.read_text(encoding="utf-8"))
    src.update(changes)
    p = tmp_path / "kohya.json"
    p.write_text(json.dumps(src), encoding="utf-8")
    return p


def _dataset(tmp_path: Path, text: str) -> str:
    (tmp_path / "ds.toml").write_text(text, encoding="utf-8")
    return "ds.toml"


@pytest.mark.parametrize("path", GUI_FIXTURES, ids=lambda p: p.name)
def test_gui_masked_loss_off_is_simply_off(path):
    c = cc.convert_file(path)
    assert "masked_loss" not in c.unmapped and "masked_loss" in c.ignored
    assert "masked_loss" not in c.data
    validate(c.data)


def test_gui_masked_loss_with_a_dataset_subset_mask_folder(tmp_path):
    ds = _dataset(tmp_path, '[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "/data/10_zqx"\n'
                            '  conditioning_data_dir = "/data/masks/10_zqx"\n  num_repeats = 10\n')
    c = cc.convert_file(_gui(tmp_path, masked_loss=True, dataset_config=ds))
    assert c.data["masked_loss"] is True and c.data["conditioning_data_dir"] == "/data/masks/10_zqx"
    assert "alpha_mask" not in c.data
    assert "conditioning_data_dir \"/data/masks/10_zqx\"" in c.reasons["dataset_config"]
    validate(c.data)


def test_gui_masked_loss_without_masks_is_reported(tmp_path):
    c = cc.convert_file(_gui(tmp_path, masked_loss=True))
    assert "masked_loss" not in c.data and c.unmapped["masked_loss"] is True
    assert "no masks are given" in c.reasons["masked_loss"] and "conditioning_data_dir" in c.reasons["masked_loss"]
    assert any("NOT converted: masked_loss = true" in line for line in c.report)


def test_gui_alpha_mask_from_additional_parameters(tmp_path):
    c = cc.convert_file(_gui(tmp_path, masked_loss=True, additional_parameters="--alpha_mask"))
    assert c.data["alpha_mask"] is True and c.data["masked_loss"] is True
    validate(c.data)


def test_sd_scripts_alpha_mask_alone_turns_masking_on(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\nalpha_mask = true\n',
                 encoding="utf-8")
    c = cc.convert_file(p)
    assert c.data["alpha_mask"] is True and c.data["masked_loss"] is True
    assert any("alpha_mask = true -> masked_loss = true" in n for n in c.notes)
    assert validate(c.data).mask_source == "alpha"


def test_sd_scripts_both_sources_keep_the_mask_folder(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text('train_data_dir = "d"\nmasked_loss = true\nalpha_mask = true\nconditioning_data_dir = "masks"\n',
                 encoding="utf-8")
    c = cc.convert_file(p)
    assert c.data["conditioning_data_dir"] == "masks" and c.data["masked_loss"] is True and "alpha_mask" not in c.data
    assert "conditioning_data_dir masks when both" in c.reasons["alpha_mask"]
    assert validate(c.data).mask_source == "folder"


def test_dataset_config_several_subsets(tmp_path):
    ds = _dataset(tmp_path, '[[datasets]]\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/10_zqx"\n  conditioning_data_dir = "/m/10_zqx"\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/5_qqq"\n  conditioning_data_dir = "/m/5_qqq"\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/reg"\n  is_reg = true\n')
    p = tmp_path / "cfg.toml"
    p.write_text(f'dataset_config = "{ds}"\nmasked_loss = true\n', encoding="utf-8")
    c = cc.convert_file(p)
    assert c.data["conditioning_data_dir"] == "/m" and c.data["masked_loss"] is True  # /m/<concept folder>/ layout
    ds = _dataset(tmp_path, '[[datasets]]\nalpha_mask = true\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/10_zqx"\n  conditioning_data_dir = "/m/a"\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/5_qqq"\n  conditioning_data_dir = "/n/b"\n')
    c = cc.convert_file(p)
    assert "conditioning_data_dir" not in c.data
    assert "not one mask folder" in c.reasons["dataset_config"]
    assert "alpha_mask" not in c.data, "sd-scripts used the folders' masks, not the alpha channel"
    assert "masked_loss" in c.unmapped and "no masks are given" in c.reasons["masked_loss"]
    validate(c.data)
    ds = _dataset(tmp_path, '[general]\nalpha_mask = true\n[[datasets]]\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/10_zqx"\n'
                            '  [[datasets.subsets]]\n  image_dir = "/d/5_qqq"\n')
    c = cc.convert_file(p)
    assert c.data["alpha_mask"] is True and c.data["masked_loss"] is True
