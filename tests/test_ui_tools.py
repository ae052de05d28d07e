"""The Tools tab's behaviour (ui/tools_actions.py) without a browser: each tool called with the form's values on tiny
LoRA files, checking what the page would show (module counts, the family, errors naming the file) and what is
written (the output's name and folder, existing files left alone).

The LoRAs are written by hand (random factors on a few attention layers of the tiny SD1.5 / SDXL models, with the
kohya names core's name tables give), so no training is needed."""
from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from ui import tools_actions as act

META = {"ss_tag_frequency": json.dumps({"10_zqx": {"zqx": 4, "a red square": 2}}),
        "modelspec.trigger_phrase": "zqx", "ss_steps": "7"}


def make_lora(path: Path, model: Path, family: str, n_unet: int = 6, n_te: int = 2, rank: int = 4, seed: int = 0,
              metadata: dict | None = None) -> Path:
    """A kohya LoRA on the first `n_unet` UNet attention layers and `n_te` text-encoder layers of `model`."""
    from core.lora.tools.names import name_table

    table = name_table(family, str(model))
    linear = [k for k, layer in table.layers.items() if len(layer.shape) == 2]
    keys = ([k for k in linear if k.startswith("unet.") and ".attn" in k][:n_unet]
            + [k for k in linear if k.startswith("text_encoder.")][:n_te])
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k in keys:
        out_f, in_f = table.layers[k].shape
        name = table.kohya_out[k]
        sd[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * 0.1
        sd[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.1
        sd[f"{name}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def files(tiny_sd15, tiny_sdxl, tmp_path_factory):
    src = tmp_path_factory.mktemp("tool_inputs")
    return SimpleNamespace(
        a=make_lora(src / "a.safetensors", tiny_sd15, "sd15", metadata=META),
        b=make_lora(src / "b.safetensors", tiny_sd15, "sd15", n_te=0, rank=2, seed=1),
        xl=make_lora(src / "xl_style.safetensors", tiny_sdxl, "sdxl", n_te=0),
        src=src)


def row(html: str, label: str) -> str:
    """The value cell of a key/value table row."""
    m = re.search(rf"<tr><td>{re.escape(label)}</td><td>(.*?)</td></tr>", html)
    assert m, f"no row {label!r} in {html}"
    return m[1]


def err(html: str) -> str:
    """An error line: its text, as the user reads it."""
    assert 'class="lw-err"' in html, html
    return unescape(html)


def ok(html: str) -> str:
    """A result in green (no error line): its text, as the user reads it."""
    assert 'class="lw-ok"' in html and 'class="lw-err"' not in html, html
    return unescape(html)


# --------------------------------------------------------------------------- Inspect / Check
def test_inspect_shows_family_modules_parts_and_metadata(files):
    head, left, right, raw = act.inspect(str(files.b), str(files.a))  # a path wins over the list
    assert "No problems found" in ok(head)
    assert row(left, "File") == "a.safetensors" and row(left, "Model family") == "SD1.5"
    assert row(left, "Modules") == "8" and row(left, "Rank") == "4" and row(left, "Trigger words") == "zqx"
    assert row(right, "UNet") == "6" and row(right, "text encoder") == "2"
    assert row(right, "a red square") == "2"  # the top tags
    assert raw["ss_tag_frequency"] == {"10_zqx": {"zqx": 4, "a red square": 2}}  # JSON values unpacked
    head, left, _, raw = act.inspect(str(files.b), "  ")  # an empty path: the list's pick
    assert row(left, "Modules") == "6" and row(left, "Rank") == "2" and raw == {}
    assert "This file holds no training metadata." in left


def test_inspect_errors_name_the_file(files, tmp_path):
    assert "Choose a LoRA from the list" in err(act.inspect(None, "")[0])
    head, left, right, raw = act.inspect(None, str(tmp_path / "gone.safetensors"))
    assert "LoRA file not found" in err(head) and "gone.safetensors" in head
    assert (left, right, raw) == ("", "", {})
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, tmp_path / "ckpt.safetensors")
    head = act.inspect(str(tmp_path / "ckpt.safetensors"), "")[0]
    assert "ckpt.safetensors holds no LoRA modules" in err(head)


def test_check_against_the_base_model(files, tiny_sd15):
    assert "All 8 modules of a.safetensors map to layers" in ok(act.check(str(files.a), str(tiny_sd15), " "))
    bad = err(act.check(str(files.xl), str(tiny_sd15), ""))
    assert "xl_style.safetensors is an SDXL LoRA; the base model is SD1.5" in bad
    assert "Choose a LoRA and a base model." in err(act.check(str(files.a), None, ""))
    assert "nothing.safetensors" in err(act.check(str(files.src / "nothing.safetensors"), str(tiny_sd15), ""))


# --------------------------------------------------------------------------- Merge
def test_merge_writes_a_new_lora_and_never_replaces_one(files, tmp_path):
    loras, models = tmp_path / "loras", tmp_path / "models"
    loras.mkdir()
    picks, strengths = [str(files.a), str(files.b), None, ""], [0.5, 1, 1, 1]
    res = act.merge(str(loras), str(models), picks, strengths, "", 0, "mix", "", False)
    assert res.written == str(loras / "mix.safetensors") and Path(res.written).is_file()
    assert "0.5 x a.safetensors + 1 x b.safetensors" in ok(res.html) and "8 modules written" in res.html
    assert f"Wrote {loras / 'mix.safetensors'}" in res.html
    before = (loras / "mix.safetensors").stat().st_mtime_ns
    again = act.merge(str(loras), str(models), picks, strengths, "", 0, "mix", "", False)
    shown = err(again.html)
    assert again.written == "" and f"{loras / 'mix.safetensors'} already exists" in shown
    assert 'choose another name or tick "Overwrite"' in shown and "--overwrite" not in shown  # the GUI's words
    assert (loras / "mix.safetensors").stat().st_mtime_ns == before
    ticks = []
    replaced = act.merge(str(loras), str(models), picks, strengths, "", 2, "mix", "", True,
                         progress=lambda *a: ticks.append(a))
    assert replaced.written and "rank 2" in ok(replaced.html) and ticks  # replaced, at rank 2, with progress
    # no name: one made from the first LoRA's
    assert act.merge(str(loras), "", [str(files.b)], [1], "", 0, "", "", False).written == \
        str(loras / "b_merged.safetensors")
    assert not models.exists()  # a LoRA output never goes to the models folder


def test_merge_refuses_bad_inputs(files, tmp_path):
    args = (str(tmp_path), str(tmp_path))
    empty = act.merge(*args, [str(files.a), None], [0, 1], "", 0, "x", "", False)
    assert "at least one LoRA with a strength other than 0" in err(empty.html) and empty.written == ""
    mixed = act.merge(*args, [str(files.a), str(files.xl)], [1, 1], "", 0, "x", "", False)
    assert "different model families" in err(mixed.html)
    ranked = act.merge(*args, [str(files.a)], [1], "/some/base", 4, "x", "", False)
    assert "Rank is for merging into a LoRA" in err(ranked.html)
    missing = act.merge(*args, [str(tmp_path / "lost.safetensors")], [1], "", 0, "x", "", False)
    assert "lost.safetensors" in err(missing.html)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_merge_into_a_checkpoint_then_extract_it_back(files, tiny_sd15, tmp_path):
    loras, models = tmp_path / "loras", tmp_path / "models"
    loras.mkdir(), models.mkdir()
    res = act.merge(str(loras), str(models), [str(files.a)], [1], str(tiny_sd15), 0, "", "", False)
    ckpt = models / f"{tiny_sd15.name}_a.safetensors"  # named after the base and the first LoRA
    assert res.written == str(ckpt) and ckpt.is_file() and list(loras.iterdir()) == []
    assert f"modules applied to {tiny_sd15.name}" in ok(res.html)
    assert f"The checkpoint is in {models}: choose it as a base model" in res.html
    out = act.extract(str(loras), str(tiny_sd15), str(ckpt), 4, 0, 0.99, 0.01, str(tiny_sd15), "", "fp16", False)
    assert out.written == str(loras / f"{ckpt.stem}_extracted_r4.safetensors") and Path(out.written).is_file()
    assert "modules extracted" in ok(out.html)
    exists = act.extract(str(loras), str(tiny_sd15), str(ckpt), 4, 0, 0.99, 0.01, str(tiny_sd15), "", "", False)
    assert f"{ckpt.stem}_extracted_r4.safetensors already exists" in err(exists.html) and exists.written == ""
    assert "Choose the base model and the fine-tuned model." in err(
        act.extract(str(loras), "", str(ckpt), 4, 0, 0.99, 0.01, "", "", "", False).html)
    assert "Clamp quantile 2" in err(act.extract(str(loras), str(tiny_sd15), str(ckpt), 4, 0, 2, 0.01, "", "x", "",
                                                 False).html)


# --------------------------------------------------------------------------- Resize / Convert
def test_resize_to_a_fixed_or_dynamic_rank(files, tmp_path):
    res = act.resize(str(tmp_path), str(files.a), 1, "", 0.9, "", "", False)
    assert res.written == str(tmp_path / "a_r1.safetensors") and Path(res.written).is_file()
    assert "8 modules resized (rank 1); ranks now 1" in ok(res.html)
    head, left, *_ = act.inspect("", res.written)
    assert row(left, "Rank") == "1"
    dyn = act.resize(str(tmp_path), str(files.a), 0, "sv_fro", 0.5, "", "", False)
    assert dyn.written == str(tmp_path / "a_sv_fro.safetensors") and "lw-ok" in dyn.html
    assert "Set a rank, or choose a dynamic method" in err(act.resize(str(tmp_path), str(files.a), 0, "", 0.9, "",
                                                                      "", False).html)
    assert "Choose a LoRA to resize." in err(act.resize(str(tmp_path), None, 4, "", 0.9, "", "", False).html)
    again = act.resize(str(tmp_path), str(files.a), 1, "", 0.9, "", "", False)
    assert "a_r1.safetensors already exists" in err(again.html) and again.written == ""


def test_convert_to_diffusers_and_back(files, tmp_path):
    res = act.convert(str(tmp_path), str(files.a), "diffusers", "", "", False)
    assert res.written == str(tmp_path / "a_diffusers.safetensors")
    assert "written in the diffusers form" in ok(res.html)
    assert row(act.inspect("", res.written)[1], "Format").lower().startswith("diffusers")
    back = act.convert(str(tmp_path), res.written, "kohya", str(tmp_path / "sub" / "k"), "", False)
    assert "the folder" in err(back.html) and "sub" in back.html  # a path into a missing folder
    back = act.convert(str(tmp_path), res.written, "kohya", "k.safetensors", "", False)
    assert back.written == str(tmp_path / "k.safetensors") and "lw-ok" in back.html
    same = act.convert(str(tmp_path), str(files.a), "diffusers", str(files.a), "", True)  # never the input
    assert "is one of the inputs" in err(same.html)
    before = Path(res.written).stat().st_mtime_ns
    assert "already exists" in err(act.convert(str(tmp_path), str(files.a), "diffusers", "", "", False).html)
    assert Path(res.written).stat().st_mtime_ns == before
    assert "Choose a LoRA to convert." in err(act.convert(str(tmp_path), "", "kohya", "", "", False).html)


def test_new_loras_go_to_the_lora_folder_else_the_outputs_folder():
    assert act.lora_folder(SimpleNamespace(loras_dir="/l", outputs_dir="/o")) == "/l"
    assert act.lora_folder(SimpleNamespace(loras_dir="", outputs_dir="/o")) == "/o"
