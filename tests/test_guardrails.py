"""Warnings before Start (core/config/guardrails.py): each fires on its bad input and none on a good config; the
guided start (core/config/guided.py) fills values that fit the detected or chosen VRAM, and says why."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.config.guardrails import check, has_word
from core.config.guided import Gpu, fit_check, guided_start
from core.config.suggest import suggest_config
from core.config.toml_io import validate
from core.data.dataset import add_trigger
from core.estimate import estimate

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "models" / "toy-sd15"


def dataset(root: Path, n: int, caption: str = "zqx, a woman smiling", repeats: int = 1) -> Path:
    folder = root / f"{repeats}_zqx"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(caption, encoding="utf-8")
    return root


@pytest.fixture
def good(tmp_path):
    """A config as the guided start makes it: SDXL character on 12 GB, 20 captioned images, trigger word zqx."""
    data = dataset(tmp_path / "data", 20)
    values = suggest_config("sdxl", 12, 20, "character").values
    return dict(values, model_family="sdxl", train_data_dir=str(data), trigger_word="zqx")


def kinds(values, **kw) -> list[str]:
    kw.setdefault("preset_family", "sdxl")
    kw.setdefault("subject", "character")
    kw.setdefault("cuda", True)
    return [g.kind for g in check(validate(values), **kw)]


def test_a_good_config_has_no_warning(good):
    assert kinds(good) == []


def test_each_warning_fires_on_its_bad_input(good, tmp_path):
    warn = lambda **kw: check(validate(dict(good, **kw.pop("set", {}))), **{  # noqa: E731
        "preset_family": "sdxl", "subject": "character", "cuda": True, **kw})
    g = warn(preset_family="flux")
    assert [x.kind for x in g] == ["family"] and "made for Flux.1, but the base model is SDXL" in g[0].message
    g = warn(set={"max_train_steps": good["max_train_steps"] * 10})
    assert [x.kind for x in g] == ["steps"] and "far too many" in g[0].message and g[0].key == "max_train_steps"
    assert "about 4000 steps" in g[0].message
    g = warn(set={"max_train_steps": 100})
    assert [x.kind for x in g] == ["steps"] and "far too few" in g[0].message
    g = warn(set={"optimizer_type": "Prodigy", "learning_rate": 1e-4})
    assert [x.kind for x in g] == ["prodigy_lr"] and "learning_rate = 0.0001 with Prodigy" in g[0].message
    assert [x.kind for x in warn(set={"optimizer_type": "Prodigy", "learning_rate": 1.0})] == []
    assert [x.kind for x in warn(set={"optimizer_type": "Prodigy", "learning_rate": 1.0, "unet_lr": 0.5})] == \
        ["prodigy_lr"]
    g = warn(set={"resolution": "768"})
    assert [x.kind for x in g] == ["resolution"] and "below SDXL's native 1024 px" in g[0].message
    g = warn(cuda=False)
    assert [x.kind for x in g] == ["optimizer"] and "AdamW8bit needs an NVIDIA GPU" in g[0].message
    assert [x.kind for x in warn(cuda=None)] == []  # not known: no check
    g = warn(set={"trigger_word": "ohwx"})
    assert [x.kind for x in g] == ["trigger"] and "missing from 20 of 20 captions (e.g. 1_zqx/000.png)" in g[0].message
    g = warn(set={"trigger_word": ""})
    assert [x.kind for x in g] == ["trigger"] and "trigger_word is empty" in g[0].message
    few = dataset(tmp_path / "few", 3, repeats=50)
    steps = suggest_config("sdxl", 12, 3, "character").values["max_train_steps"]
    g = warn(set={"train_data_dir": str(few), "max_train_steps": steps})
    assert [x.kind for x in g] == ["images"] and "Only 3 images for a character / person: use at least 5" in g[0].message


def test_trigger_word_is_found_as_the_trainer_finds_it(tmp_path):
    for caption, word in (("zqx, a dog", "zqx"), ("a photo of ZQX dog", "zqx"), ("zqxdog", "zqx"), ("", "zqx"),
                          ("a zqx", "zqx"), ("x-zqx", "zqx")):
        assert has_word(caption, word) == (add_trigger(caption, word) == caption), caption
    # an image without a caption file is captioned with its folder's name, as the trainer does
    root = tmp_path / "d"
    (root / "10_zqx woman").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "10_zqx woman" / "a.png")
    cfg = validate({"train_data_dir": str(root), "trigger_word": "zqx", "model_family": "sd15"})
    assert [g.kind for g in check(cfg)] == []


def test_the_toy_model_is_not_warned_about_its_32_px():
    cfg = validate({"pretrained_model_name_or_path": str(TOY), "resolution": "32"})
    assert [g.kind for g in check(cfg)] == []
    g = check(validate({"model_family": "sd15", "resolution": "256"}))  # a real SD1.5: 512 px
    assert [x.kind for x in g] == ["resolution"] and "below SD1.5's native 512 px" in g[0].message
    assert check(validate({"model_family": "flux", "resolution": "512"})) == []  # Flux trains well from 512


def test_guided_start_on_a_gpu_fills_values_that_fit(tmp_path):
    data = dataset(tmp_path / "data", 25)
    g = guided_start("person", "", "sdxl", str(data), "auto", Gpu("NVIDIA GeForce RTX 3060", 12.0))
    assert g.ok and g.family == "sdxl" and g.vram_gb == 12.0
    # 2 of the 25 images are held out for the validation loss: the steps count the 23 that train
    assert g.values["train_data_dir"] == str(data) and g.values["max_train_steps"] == 23 * 150
    assert g.values["validation_split"] == 2
    assert g.headline.startswith("Filled in for SDXL, character / person, 12 GB, detected (NVIDIA GeForce RTX 3060), "
                                 "25 images: 3450 steps, estimated peak")
    assert estimate(validate(g.values), "sdxl").peak_vram_gb <= 12
    by_hand = guided_start("style", "", "flux", str(data), "16", Gpu("NVIDIA GeForce RTX 3060", 12.0))
    assert by_hand.ok and by_hand.vram_gb == 16 and "chosen by hand" in by_hand.headline
    assert estimate(validate(by_hand.values), "flux").peak_vram_gb <= 16


def test_guided_start_on_a_cpu_and_when_it_cannot_fill(tmp_path):
    g = guided_start("character", "", "sdxl", "", "auto", Gpu())
    assert g.ok and g.vram_gb == 8 and g.values["optimizer_type"] == "AdamW"
    assert any("No NVIDIA GPU was found" in r for r in g.reasons) and "without an NVIDIA GPU" in g.headline
    assert any("no usable images" in r for r in g.reasons)
    demo = guided_start("concept", str(TOY), "auto", "", "auto", Gpu())
    assert demo.ok and demo.values["resolution"] == "32" and "Demo (CPU)" in demo.headline
    none = guided_start("character", "", "auto", "", "auto", Gpu())
    assert not none.ok and "Choose the base model's family" in none.problems[0]
    flux8 = guided_start("character", "", "flux", "", "8", Gpu())  # T5-XXL in fp8 while the captions are cached
    assert flux8.ok and flux8.values["t5xxl_precision"] == "fp8"
    flux6 = guided_start("character", "", "flux", "", "6", Gpu())
    assert not flux6.ok and flux6.problems[0].startswith("Nothing fits 6 GB for Flux.1 dev")


def test_fit_check_says_whether_the_form_fits():
    cfg = validate({"resolution": "1024", "network_train_unet_only": True})
    e = fit_check(cfg, "sdxl", 8)
    assert e.fits is False and e.suggestions and e.suggestions[-1]["fits"]
    assert fit_check(cfg, "sdxl", 48).fits is True
    assert fit_check(cfg, "sdxl", None).fits is None
    assert fit_check(validate({}), None, 8) is None  # no base model, no family: nothing to estimate
