"""Flux from the files users have (BFL transformer + clip_l/t5xxl/ae, all-in-one fp8), and the saved LoRA
under ComfyUI's Flux rules (tests/comfy_flux.py re-implements them)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from comfy_flux import apply_lora, bfl_to_diffusers_keys_for_model, diffusers_to_bfl, lora_key_map
from core.config.toml_io import save_config
from core.models.loading import ModelLoadError, load_components
from test_flux import flux_config
from tiny_flux import make_flux_single_files, make_tiny_flux
from train_helpers import run_cli, train_in_process


@pytest.fixture(scope="module")
def files():
    return make_flux_single_files("dev")


def _parts(files):
    return dict(clip_l=str(files / "clip_l.safetensors"), t5xxl=str(files / "t5xxl_fp16.safetensors"),
                ae=str(files / "ae.safetensors"))


def _worst(model, ref, cast=None) -> float:
    a, b = model.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    return max((a[k].float() - (b[k].to(cast) if cast else b[k]).float()).abs().max().item() for k in a)


def test_separate_files_and_all_in_one_fp8_load_exactly(files):
    from diffusers import FluxPipeline

    ref = FluxPipeline.from_pretrained(str(files / "reference"), local_files_only=True)
    c = load_components(str(files / "flux1-dev.safetensors"), base_config_dir=str(files / "config"),
                        settings=_parts(files))
    assert c.family.name == "flux" and c.extra["variant"] == "dev"
    assert _worst(c.denoiser, ref.transformer, torch.bfloat16) == 0  # the file is bf16
    for mine, theirs in zip((c.vae, *c.text_encoders), (ref.vae, ref.text_encoder, ref.text_encoder_2)):
        assert _worst(mine, theirs) == 0
    del c
    aio = load_components(str(files / "flux1-dev-aio-fp8.safetensors"), base_config_dir=str(files / "config"))
    bf16 = ref.transformer.to(torch.bfloat16)
    assert _worst(aio.denoiser, bf16, torch.float8_e4m3fn) == 0  # fp8 upcast on load
    assert aio.denoiser.dtype == torch.float32
    for mine, theirs in zip((aio.vae, *aio.text_encoders), (ref.vae, ref.text_encoder, ref.text_encoder_2)):
        assert _worst(mine, theirs) == 0


def test_transformer_only_file_asks_for_the_missing_parts(files):
    with pytest.raises(ModelLoadError) as e:
        load_components(str(files / "flux1-dev.safetensors"), base_config_dir=str(files / "config"))
    assert "ae" in str(e.value) and "transformer" in str(e.value)
    with pytest.raises(ModelLoadError) as e:
        load_components(str(files / "flux1-dev.safetensors"), base_config_dir=str(files / "config"),
                        settings=dict(_parts(files), t5xxl=""))
    assert "t5xxl" in str(e.value)
    with pytest.raises(ModelLoadError) as e:  # a CLIP file given as T5
        load_components(str(files / "flux1-dev.safetensors"), base_config_dir=str(files / "config"),
                        settings=dict(_parts(files), t5xxl=str(files / "clip_l.safetensors")))
    assert "clip_l.safetensors is not a T5-XXL text encoder file" in str(e.value)


def test_cli_trains_from_separate_single_files(files, tiny_dataset, tmp_path):
    cfg = flux_config(files / "flux1-dev.safetensors", tiny_dataset, tmp_path, max_train_steps=2,
                      base_config_dir=str(files / "config"), network_train_unet_only=True, **_parts(files))
    save_config(cfg, tmp_path / "run.toml")
    r = run_cli("train", "--config", str(tmp_path / "run.toml"), timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    lora = load_file(str(tmp_path / "lora.safetensors"))
    with safe_open(str(files / "flux1-dev.safetensors"), "pt") as f:
        bfl_keys = list(f.keys())
    full = dict(num_layers=1, num_single_layers=1, hidden_size=3072)
    key_map = lora_key_map(bfl_keys, **full)
    modules = {k.rsplit(".lora_", 1)[0] for k in lora}
    assert len(modules) == 20 and all(m in key_map for m in modules)
    import hashlib

    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        meta = f.metadata()
    data = (files / "flux1-dev.safetensors").read_bytes()
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(data).hexdigest()
    assert meta["ss_sd_model_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert len(meta["lw_dataset_hash"]) == 64 and meta["modelspec.architecture"] == "flux-1-dev/lora"


def _merged(model) -> dict[str, torch.Tensor]:
    """The trained weights with every LoRA merged in (peft's own merge), in the base model's key names."""
    import copy

    from peft.tuners.lora import LoraLayer

    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, LoraLayer):
            mod.merge()
    sd = {}
    for k, v in m.state_dict().items():
        if "lora_" in k:
            continue
        sd[k.replace(".base_layer", "")] = v
    return sd


def test_every_key_maps_in_comfyui_and_applies_the_trained_change(tiny_dataset, tmp_path):
    model = make_tiny_flux("dev")
    cfg = flux_config(model, tiny_dataset, tmp_path, max_train_steps=8, network_train_unet_only=False)
    trainer = train_in_process(cfg)
    tr, clip = trainer.comps.denoiser, trainer.comps.text_encoders[0]
    shape = bfl_to_diffusers_keys_for_model(tr)
    from diffusers import FluxPipeline

    base = FluxPipeline.from_pretrained(model, local_files_only=True)
    base_bfl = {f"diffusion_model.{k}": v for k, v in diffusers_to_bfl(base.transformer.state_dict(), **shape).items()}
    clip_prefix = "clip_l.transformer.text_model."
    base_clip = {clip_prefix + k: v for k, v in base.text_encoder.state_dict().items()}
    key_map = lora_key_map(list(base_bfl), clip_keys=list(base_clip), **shape)
    lora = load_file(str(tmp_path / "lora.safetensors"))
    patched, not_loaded = apply_lora({**base_bfl, **base_clip}, lora, key_map)
    assert not_loaded == [], f"ComfyUI would log 'lora key not loaded' for {not_loaded[:5]}"

    want_bfl = {f"diffusion_model.{k}": v for k, v in diffusers_to_bfl(_merged(tr), **shape).items()}
    want_clip = {clip_prefix + k: v for k, v in _merged(clip).items()}
    got = {**base_bfl, **base_clip, **patched}
    changed = 0
    for k, want in {**want_bfl, **want_clip}.items():
        assert (got[k] - want).abs().max() < 1e-5, k
        changed += bool((want - ({**base_bfl, **base_clip})[k]).abs().max() > 1e-6)
    assert changed >= 20  # the LoRA did change the transformer's and CLIP's weights
