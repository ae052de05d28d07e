"""convert-config: kohya_ss's LyCORIS LoRA_type values and sd-scripts' lycoris.kohya network_args -> network_type
(locon / loha / lokr) and factor, decompose_both, use_tucker; the kinds not trained here stay reported."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import convert_config as cc
from core.config.toml_io import validate

PRESETS = Path(__file__).parent / "data" / "kohya_presets"


def _gui(tmp_path: Path, data: dict) -> cc.Conversion:
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"epoch": 1, "network_dim": 8, "network_alpha": 4, **data}), encoding="utf-8")
    return cc.convert_file(p)


def _toml(tmp_path: Path, args: list[str], extra: str = "") -> cc.Conversion:
    p = tmp_path / "s.toml"
    p.write_text(f'network_module = "lycoris.kohya"\nnetwork_args = {json.dumps(args)}\nnetwork_dim = 8\n'
                 f"max_train_epochs = 1\n{extra}", encoding="utf-8")
    return cc.convert_file(p)


def test_kohya_lokr_presets(tmp_path):
    c = cc.convert_file(PRESETS / "sdxl_lokr_v1.0.json")
    d = c.data
    assert (d["network_type"], d["network_dim"], d["conv_dim"], d["use_tucker"]) == ("lokr", 64, 64, True)
    assert "factor" not in d and "decompose_both" not in d  # -1 / false: the defaults
    assert "use_cp" not in c.unmapped and any("use_cp" in n and "use_tucker" in n for n in c.notes)
    c = cc.convert_file(PRESETS / "sd15_lokr_v1.1.json")
    d = c.data
    assert (d["network_type"], d["factor"], d["decompose_both"]) == ("lokr", 6, True)
    # LoKr's "full matrix" dim 100000: the largest rank here, with the reason in the notes
    assert d["network_dim"] == 1024 and d["conv_dim"] == 512 and any("full matrices" in n for n in c.notes)
    assert "use_tucker" not in d  # use_cp true, but kohya_ss passes use_tucker = false
    assert c.unmapped["train_norm"] is True and "not supported" in c.reasons["train_norm"]
    validate(d)


@pytest.mark.parametrize("lora_type, kind", [("LyCORIS/LoHa", "loha"), ("LyCORIS/LoKr", "lokr"),
                                             ("LyCORIS/LoCon", "locon"), ("LoCon", "locon"), ("Kohya LoCon", "locon")])
def test_gui_lora_types_become_network_type(lora_type, kind, tmp_path):
    c = _gui(tmp_path, {"LoRA_type": lora_type, "conv_dim": 4, "conv_alpha": 2, "factor": 8, "decompose_both": True,
                        "use_tucker": True})
    d = c.data
    assert d["network_type"] == kind and d["conv_dim"] == 4 and d["conv_alpha"] == 2.0
    assert "LoRA_type" not in c.unmapped
    if kind == "lokr":
        assert d["factor"] == 8 and d["decompose_both"] is True
    else:  # kohya_ss passes factor / decompose_both for LoKr only
        assert "factor" not in d and "factor" not in c.unmapped and "decompose_both" not in d
    assert d.get("use_tucker", False) is (kind in ("loha", "lokr"))
    if lora_type in ("LyCORIS/LoCon", "LoCon"):  # LyCORIS passes use_tucker: LoCon Tucker cores are not trained here
        assert c.unmapped["use_tucker"] is True and "loha / lokr" in c.reasons["use_tucker"]
    elif kind == "locon":  # kohya's own LoCon has no such option
        assert "use_tucker" in c.ignored
    validate(d)


@pytest.mark.parametrize("lora_type, words", [("LyCORIS/iA3", "(IA)^3"), ("Kohya DyLoRA", "DyLoRA"),
                                              ("LyCORIS/DyLoRA", "DyLoRA"), ("LyCORIS/GLoRA", "GLoRA"),
                                              ("LyCORIS/BOFT", "OFT"), ("LyCORIS/Diag-OFT", "OFT"),
                                              ("LyCORIS/Native Fine-Tuning", "full fine-tuning")])
def test_gui_types_not_trained_here_are_reported(lora_type, words, tmp_path):
    c = _gui(tmp_path, {"LoRA_type": lora_type, "conv_dim": 4})
    assert c.unmapped["LoRA_type"] == lora_type and words in c.reasons["LoRA_type"]
    assert "network_type" not in c.data and "conv_dim" not in c.data and c.data["network_dim"] == 8


def test_sd_scripts_lycoris_network_args(tmp_path):
    c = _toml(tmp_path, ["algo=lokr", "factor=8", "decompose_both=True", "conv_dim=4", "conv_alpha=2",
                         "use_tucker=True", "preset=full", "rank_dropout=0.1"])
    d = c.data
    assert (d["network_type"], d["factor"], d["decompose_both"], d["use_tucker"]) == ("lokr", 8, True, True)
    assert (d["conv_dim"], d["conv_alpha"], d["rank_dropout"]) == (4, 2.0, 0.1) and not c.unmapped
    c = _toml(tmp_path, ["algo=loha", "use_cp=True", "factor=8", "dropout=0.1"])
    d = c.data
    assert d["network_type"] == "loha" and d["use_tucker"] is True and "factor" not in d
    assert "LoKr" in c.reasons["network_args factor"] and "network_dropout" not in d
    assert "input dropout" in c.reasons["network_args dropout"]
    c = _toml(tmp_path, ["algo=locon", "conv_dim=4"])
    assert c.data["network_type"] == "locon" and c.data["conv_dim"] == 4
    c = _toml(tmp_path, ["algo=ia3"])
    assert "network_type" not in c.data and "(IA)^3" in c.reasons["network_module"]
    c = _toml(tmp_path, ["algo=lokr", "dora_wd=True"])
    assert c.data["network_type"] == "lokr" and "use_dora" not in c.data and "DoRA" in c.reasons["network_args dora_wd"]
    for conv in (c,):
        validate(conv.data)


def test_flux_lycoris_stays_not_converted(tmp_path):
    c = _toml(tmp_path, ["algo=lokr", "factor=8"], 'pretrained_model_name_or_path = "flux1-dev.safetensors"\n'
                                                   'clip_l = "clip_l.safetensors"\nt5xxl = "t5xxl.safetensors"\n')
    assert c.data.get("model_family") == "flux" and "network_type" not in c.data
    assert "not trained for Flux" in c.reasons["network_module"]
