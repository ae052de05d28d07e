"""The table of presets per family x subject x VRAM tier and `python -m core suggest`: every suggestion fits its
VRAM by the estimate (or says clearly that nothing fits), learning rates follow the LoRA scale and the optimizer,
steps follow the image count, and the CLI prints schema keys and reasons."""
from __future__ import annotations

import json

import pytest

from core.config import presets
from core.config.recipes import FAMILIES, MEMORY, SUBJECTS, TIERS, subject_of, tier_for
from core.config.schema import TrainConfig
from core.config.suggest import lr_for, recipe_values, suggest_config, table_cells, total_steps
from core.config.toml_io import validate
from core.estimate import estimate
from train_helpers import run_cli


def test_the_table_covers_every_family_subject_and_tier():
    assert set(FAMILIES) == {"sd15", "sdxl", "flux", "flux2_klein"} and TIERS == (8, 12, 16, 24)
    assert set(SUBJECTS) == {"character", "style", "concept", "clothing"}
    assert len(table_cells()) == 64
    for alias, name in (("person", "character"), ("object", "concept"), ("product", "concept"), ("outfit", "clothing")):
        assert subject_of(alias).name == name
    with pytest.raises(ValueError, match="subject 'landscape': use one of character"):
        subject_of("landscape")


@pytest.mark.parametrize("family,tier", [(f, t) for f in ("sd15", "sdxl", "flux", "flux2_klein") for t in TIERS])
def test_each_cell_fits_its_tier_by_the_estimate_or_is_marked_as_not_fitting(family, tier):
    for subject in SUBJECTS:
        values, reasons = recipe_values(family, subject, tier, images=SUBJECTS[subject].typical_images)
        e = estimate(validate(values), family)
        if MEMORY[family][tier].fits:
            assert e.peak_vram_gb <= tier, (family, subject, tier, e.peak_vram_gb)
        else:
            assert e.peak_vram_gb > tier, (family, subject, tier, e.peak_vram_gb)
        assert all(isinstance(r, str) and r for r in reasons)


@pytest.mark.parametrize("family,vram", [(f, v) for f in ("sd15", "sdxl", "flux", "flux2_klein")
                                         for v in (8, 10, 12, 16, 24, 32)])
def test_suggest_fits_the_given_vram_or_says_nothing_fits(family, vram):
    s = suggest_config(family, vram, 20, "character")
    cfg = validate(s.values)  # a valid config of schema keys
    peak = estimate(cfg, family).peak_vram_gb
    if s.fits:
        assert peak <= vram and s.peak_vram_gb == peak
        assert any(f"fits in {vram:g} GB" in r for r in s.reasons)
    else:  # only Flux below its caching peak (T5-XXL alone is 4.9 GB in fp8, 9.5 GB in bf16)
        assert family == "flux" and vram < 7
        assert s.message.startswith(f"Nothing fits {vram:g} GB for Flux.1 dev") and "T5-XXL" in s.message


def test_flux_fits_8_and_10_gb_with_t5_in_fp8_and_nothing_fits_6():
    """T5-XXL in bf16 alone is 9.5 GB while the captions are cached: without t5xxl_precision fp8 the 8 GB settings
    do not fit 8 or 10 GB; with it they do, and below the caching peak (T5 in fp8, CLIP-L, the VAE) nothing does."""
    for vram in (8, 10):
        s = suggest_config("flux", vram, 20, "style")
        assert s.tier == 8 and s.fits and s.peak_vram_gb <= vram, (vram, s.peak_vram_gb)
        v = s.values
        assert (v["t5xxl_precision"], v["base_precision"], v["blocks_to_swap"]) == ("fp8", "fp8", 44)
        assert v["optimizer_type"] == "AdamW8bit" and v["gradient_checkpointing"] is True
        assert any(r.startswith("t5xxl_precision = fp8: T5-XXL in fp8") for r in s.reasons)
        bf16_t5 = estimate(validate({**v, "t5xxl_precision": "auto"}), "flux")
        assert bf16_t5.peak_vram_gb > 10 and bf16_t5.phase == "caching"
    s = suggest_config("flux", 6, 20, "character")
    assert not s.fits and s.peak_vram_gb > 6
    assert s.message.startswith("Nothing fits 6 GB for Flux.1 dev") and "T5-XXL, stored in fp8" in s.message


def test_below_the_smallest_tier_the_estimate_changes_make_it_fit():
    s = suggest_config("sd15", 4, 20, "character")
    assert s.tier == 8 and s.fits and s.peak_vram_gb <= 4
    assert s.changes and any("to fit 4 GB" in r and "gradient_checkpointing" in r for r in s.reasons)
    assert s.values["gradient_checkpointing"] is True
    assert estimate(validate(s.values), "sd15").peak_vram_gb <= 4
    assert tier_for(6) is None and tier_for(12.5) == 12 and tier_for(80) == 24


def test_learning_rate_follows_the_lora_scale_and_prodigy_gets_1():
    seen_prodigy = False
    for pr in presets.generated_presets():
        cfg = presets.apply_preset(pr)
        fam = FAMILIES[pr.family]
        if cfg.optimizer_type == "Prodigy":
            seen_prodigy = True
            assert cfg.learning_rate == 1.0 and cfg.unet_lr is None and cfg.text_encoder_lr is None, pr.name
            continue
        scale = cfg.network_alpha / cfg.network_dim
        assert cfg.learning_rate * scale == pytest.approx(fam.reference.lr * fam.reference.scale, rel=1e-2), pr.name
    assert seen_prodigy
    assert lr_for(1e-4, 1.0, 16, 1.0) == 1.6e-3  # sd-scripts' 16/1 is 16x ai-toolkit's 16/16 at the same LR
    assert lr_for(1e-4, 0.5, 64, 32.0) == 1e-4


def test_steps_follow_the_image_count_within_the_subject_range():
    sub = SUBJECTS["character"]
    assert total_steps(sub, 20, 1) == (3000, 3000)  # 20 images x 150 uses
    assert total_steps(sub, 20, 2) == (1500, 3000)
    assert total_steps(sub, 2, 1) == (400, 400)  # never under 400 image uses
    assert total_steps(sub, 100, 1) == (4000, 4000)  # never over 4000
    few = suggest_config("sd15", 12, 5, "concept").values["max_train_steps"]
    more = suggest_config("sd15", 12, 10, "concept").values["max_train_steps"]
    assert more > few and more == 10 * SUBJECTS["concept"].uses_per_image[1] // 2  # batch 2 on 12 GB


def test_generated_presets_are_listed_after_the_shipped_ones():
    listed = presets.list_presets(user_dir=presets.PRESETS_DIR / "no-user-dir")
    gen = [p for p in listed if p.generated]
    assert len(gen) == 64 - sum(not MEMORY[f][t].fits for f in FAMILIES for t in TIERS) * len(SUBJECTS) == 64
    assert [p.name for p in listed[:5]] == ["SD1.5 character", "SD1.5 style", "SDXL character", "SDXL style", "Demo (CPU)"]
    assert listed.index(gen[0]) > max(listed.index(p) for p in listed if p.path)
    names = [p.name for p in gen]
    assert "SDXL · character · 12 GB" in names and "Flux.1 dev · style · 24 GB" in names
    assert "Flux.1 dev · style · 8 GB" in names  # with T5-XXL in fp8 while caching
    assert "FLUX.2 klein base 4B · character · 12 GB" in names
    assert "FLUX.2 klein base 4B · style · 8 GB" in names  # with Qwen3 in fp8 while caching
    assert not [g for g in names for p in listed if p.path and p.name in g]  # no shipped name inside a generated one
    for p in gen:
        cfg = presets.apply_preset(p)
        assert isinstance(cfg, TrainConfig) and p.description and p.reasons and p.family and p.subject
        assert cfg.model_family == "auto"  # a preset never forces a family onto another base model
    for p in listed:  # the shipped files say which family and subject they are for (the guardrails use it)
        assert p.family in FAMILIES and p.subject in SUBJECTS, p.name


def test_cli_json_text_nothing_fits_and_bad_input(tmp_path):
    r = run_cli("suggest", "--family", "sdxl", "--vram", "12", "--images", "25", "--subject", "person", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["config"]) <= set(TrainConfig.model_fields)
    assert data["fits"] is True and data["peak_vram_gb"] <= 12 and data["family"] == "sdxl"
    # 2 of the 25 images are held out for the validation loss; the steps count the 23 that train
    assert data["config"]["validation_split"] == 2 and data["config"]["max_train_steps"] == 23 * 150
    assert any(r.startswith("validation_split = 2:") for r in data["reasons"])
    r = run_cli("suggest", "--family", "sd15", "--vram", "8", "--images", "10", "--subject", "person", "--json")
    few = json.loads(r.stdout)
    assert "validation_split" not in few["config"] and few["config"]["max_train_steps"] == 10 * 150
    assert any(r.startswith("validation_split = 0: with 10 images") for r in few["reasons"])
    out = tmp_path / "run.toml"
    r = run_cli("suggest", "--family", "flux", "--vram", "16", "--images", "30", "--subject", "style", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "fits in 16 GB" in r.stdout and "base_precision = fp8" in r.stdout and out.is_file()
    r = run_cli("estimate", "--config", str(out), "--family", "flux", "--vram", "16")
    assert r.returncode == 0 and "Fits in 16 GB" in r.stdout, r.stdout + r.stderr
    r = run_cli("suggest", "--family", "flux", "--vram", "8", "--images", "20")
    assert r.returncode == 0 and "fits in 8 GB" in r.stdout and 't5xxl_precision = "fp8"' in r.stdout
    r = run_cli("suggest", "--family", "flux", "--vram", "6", "--images", "20")
    assert r.returncode == 1 and "Nothing fits 6 GB for Flux.1 dev" in r.stderr
    r = run_cli("suggest", "--family", "sd15", "--vram", "8", "--images", "0")
    assert r.returncode == 2 and "--images 0" in r.stderr
    r = run_cli("suggest", "--family", "sd15", "--vram", "0", "--images", "5")
    assert r.returncode == 2 and "--vram 0" in r.stderr
    data_dir = tmp_path / "data"
    (data_dir / "10_zqx").mkdir(parents=True)
    for i in range(6):
        (data_dir / "10_zqx" / f"{i}.png").write_bytes(b"")  # only counted here
    r = run_cli("suggest", "--family", "sd15", "--vram", "8", "--data", str(data_dir), "--subject", "object", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["images"] == 6 and data["config"]["train_data_dir"] == str(data_dir)
    assert data["config"]["max_train_steps"] == max(400, 6 * SUBJECTS["concept"].uses_per_image[1])
    r = run_cli("suggest", "--family", "sd15", "--vram", "8", "--data", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "--data" in r.stderr and "not found" in r.stderr
