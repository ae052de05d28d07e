"""The VRAM estimate: real-size parameter counts from the shipped configs, monotone in the settings, suggestions
that fit, the CLI (JSON, --family without a local model) and errors that name the key."""
from __future__ import annotations

import json

import pytest

from core.config.toml_io import validate
from core.estimate import estimate, suggest
from train_helpers import run_cli


def _cfg(**kw):
    base = dict(resolution="1024", mixed_precision="bf16", network_train_unet_only=True)
    base.update(kw)
    return validate(base)


def test_real_size_parameter_counts_from_the_shipped_configs():
    flux = estimate(_cfg(), "flux").settings
    assert 11.8e9 < flux["denoiser_parameters"] < 12.0e9 and flux["blocks"] == 57
    sdxl = estimate(_cfg(), "sdxl").settings
    assert 2.5e9 < sdxl["denoiser_parameters"] < 2.6e9 and sdxl["blocks"] == 7
    sd15 = estimate(_cfg(resolution="512"), "sd15").settings
    assert 0.85e9 < sd15["denoiser_parameters"] < 0.87e9 and sd15["blocks"] == 9


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_estimate_grows_with_resolution_batch_and_rank_and_drops_with_each_memory_mode(family):
    base = dict(resolution="768")
    peak = lambda **kw: estimate(_cfg(**{**base, **kw}), family).training_gb  # noqa: E731
    ref = peak()
    assert peak(resolution="1024") > ref and peak(train_batch_size=2) > ref and peak(network_dim=128) > ref
    assert peak(gradient_checkpointing=True) < ref
    assert peak(optimizer_type="AdamW8bit") < ref
    assert peak(base_precision="fp8") < peak(gradient_checkpointing=True)
    assert peak(base_precision="nf4", gradient_checkpointing=True) < peak(base_precision="fp8")
    assert peak(base_precision="fp8", blocks_to_swap=4) < peak(base_precision="fp8")
    assert peak(blocks_to_swap=4) < peak(gradient_checkpointing=True)
    e = estimate(_cfg(**base), family)
    assert e.peak_vram_gb == max(e.training_gb, e.caching_gb)
    assert {"base_weights", "text_encoders", "vae", "lora_and_optimizer", "activations", "overhead"} <= set(e.parts)


def test_flux_figures_are_in_the_published_ranges():
    bf16 = estimate(_cfg(gradient_checkpointing=True, optimizer_type="AdamW8bit"), "flux")
    assert bf16.peak_vram_gb > 26  # unquantised Flux: > 30 GB (SimpleTuner), ~26 GB (HF)
    low = estimate(_cfg(base_precision="fp8", blocks_to_swap=16, optimizer_type="AdamW8bit"), "flux")
    assert 8 <= low.training_gb <= 14  # sd-scripts: 12 GB with fp8 + swap 16 + AdamW8bit


@pytest.mark.parametrize("family,vram", [("flux", 12), ("sdxl", 8), ("sd15", 4)])
def test_vram_gives_suggestions_whose_estimate_fits(family, vram):
    cfg = _cfg(network_train_unet_only=False, resolution="1024" if family != "sd15" else "512")
    e = suggest(cfg, vram, family)
    assert e.fits is False and e.suggestions
    assert e.suggestions[-1]["fits"] and e.suggestions[-1]["peak_vram_gb"] <= vram
    # applying every suggested change gives that estimate
    data = cfg.model_dump()
    for s in e.suggestions:
        data.update(s["set"])
    assert estimate(validate(data), family).peak_vram_gb == e.suggestions[-1]["peak_vram_gb"]
    assert suggest(cfg, 200, family).fits is True


def test_cli_family_flux_without_a_local_model_json_and_text(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('pretrained_model_name_or_path = "/nowhere/flux1-dev.safetensors"\nresolution = "1024"\n'
                   'mixed_precision = "bf16"\n', encoding="utf-8")
    r = run_cli("estimate", "--config", str(cfg), "--family", "flux", "--json", "--set", "base_precision=fp8")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["peak_vram_gb"] > 0 and data["family"] == "flux" and data["parts"]["base_weights"] > 10
    assert data["settings"]["base_precision"] == "fp8"
    r = run_cli("estimate", "--config", str(cfg), "--family", "flux", "--vram", "12")
    assert r.returncode == 0, r.stderr
    assert "Estimated peak VRAM" in r.stdout and "Does not fit in 12 GB" in r.stdout and "(fits)" in r.stdout
    r = run_cli("estimate", "--config", str(cfg))
    assert r.returncode == 2 and "--family" in r.stderr


def test_bad_values_name_the_key(tmp_path):
    r = run_cli("estimate", "--family", "flux", "--set", "base_precision=fp4")
    assert r.returncode == 2 and "base_precision" in r.stderr
    with pytest.raises(ValueError, match="blocks_to_swap = 10 is larger than the 9 blocks"):
        estimate(_cfg(blocks_to_swap=10), "sd15")
    with pytest.raises(ValueError, match="blocks_to_swap cannot be combined with base_precision"):
        estimate(_cfg(blocks_to_swap=2, base_precision="nf4"), "flux")


def test_t5xxl_fp8_lowers_the_caching_phase_and_is_suggested_when_it_sets_the_peak():
    from core.estimate.counts import config_folder, model_counts

    kw = dict(resolution="512", base_precision="fp8", blocks_to_swap=44, optimizer_type="AdamW8bit")
    bf16, fp8 = (estimate(_cfg(**kw, t5xxl_precision=p), "flux") for p in ("auto", "fp8"))
    counts = model_counts(str(config_folder("flux")), "flux")
    t5, t5_linear = counts.text_encoders[1], counts.te_linear[1]
    assert 4.7e9 < t5 < 4.8e9 and 4.6e9 < t5_linear < t5  # T5-XXL: all but the embeddings and norms in Linears
    saved = (t5 * 2 - (t5_linear + (t5 - t5_linear) * 2)) / 1024 ** 3  # bf16 -> fp8 Linear weights
    assert bf16.caching_gb - fp8.caching_gb == pytest.approx(saved * 1.05, abs=0.02)  # + fragmentation
    assert bf16.phase == "caching" and bf16.peak_vram_gb > 10 and fp8.peak_vram_gb < 8
    assert fp8.training_gb == bf16.training_gb and fp8.settings["t5xxl_precision"] == "fp8"
    all_swapped = estimate(_cfg(**{**kw, "blocks_to_swap": 57}, t5xxl_precision="fp8"), "flux")
    assert all_swapped.phase == "caching" and any("T5-XXL, stored in fp8" in n for n in all_swapped.notes)
    # caching sets the peak: T5 in fp8 is the first change
    e = suggest(_cfg(**kw), 8, "flux")
    assert e.fits is False and e.suggestions[0]["set"] == {"t5xxl_precision": "fp8"} and e.suggestions[0]["fits"]
    # the training phase is the peak until blocks are swapped, then caching is: T5 in fp8 comes after the swap
    e = suggest(_cfg(base_precision="fp8", optimizer_type="AdamW8bit"), 10, "flux")
    sets = [s["set"] for s in e.suggestions]
    assert "blocks_to_swap" in sets[0] and sets[1] == {"t5xxl_precision": "fp8"} and e.suggestions[-1]["fits"]
    # not needed where the rest fits: no T5 change at 12 GB
    e = suggest(_cfg(base_precision="fp8", optimizer_type="AdamW8bit"), 12, "flux")
    assert e.suggestions[-1]["fits"] and all("t5xxl_precision" not in s["set"] for s in e.suggestions)
    # for a family without T5 the setting is ignored and said so, by name
    sd = estimate(_cfg(t5xxl_precision="fp8"), "sdxl")
    assert sd.peak_vram_gb == estimate(_cfg(), "sdxl").peak_vram_gb
    assert any('t5xxl_precision = "fp8" applies to Flux.1 only; ignored for SDXL' in n for n in sd.notes)
