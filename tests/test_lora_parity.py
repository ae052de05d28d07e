"""A saved LoRA, loaded by diffusers, reproduces exactly what was trained; its keys are ComfyUI/A1111 keys."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from train_helpers import CaptureLogs, te_out, tiny_config, train_in_process, unet_inputs, unet_out

VARIANTS = {
    "attn+te": dict(),
    "ff+proj+conv": dict(lora_ff=True, lora_proj=True, conv_dim=4, conv_alpha=1, network_train_unet_only=True),
}


def _pipeline(family: str, model):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    return cls.from_pretrained(model, dtype=torch.float32)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_saved_lora_reproduces_trained_model_in_diffusers(family, variant, request, tiny_dataset, tmp_path):
    model = request.getfixturevalue(f"tiny_{family}")
    cfg = tiny_config(model, tiny_dataset, tmp_path, **VARIANTS[variant])
    trainer = train_in_process(cfg)
    comps = trainer.comps
    inputs = unet_inputs(comps.denoiser, family)
    comps.denoiser.eval()
    trained = unet_out(comps.denoiser, inputs)
    # a text encoder that is not trained is freed once its outputs are cached (None): nothing to compare
    trained_te = [te_out(te.eval(), tok) if te is not None else None for te, tok in zip(comps.text_encoders, comps.tokenizers)]

    pipe = _pipeline(family, model)
    base = unet_out(pipe.unet, inputs)
    assert (trained - base).abs().max() > 1e-3, "training changed nothing: the test would prove nothing"
    with CaptureLogs() as logs:
        pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    assert logs.key_problems(text_encoder_trained=cfg.train_text_encoder) == []
    loaded = unet_out(pipe.unet, inputs)
    assert (loaded - trained).abs().max() < 1e-4
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    for te, tok, want in zip(encoders, comps.tokenizers, trained_te):
        if want is not None:
            assert (te_out(te, tok) - want).abs().max() < 1e-4
    assert cfg.network_train_unet_only or all(w is not None for w in trained_te)

    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
        alphas = [f.get_tensor(k) for k in keys if k.endswith(".alpha")]
    assert all(a.dtype == torch.float32 and a.dim() == 0 for a in alphas)
    prefixes = {k.split("_", 2)[0] + "_" + k.split("_", 2)[1] for k in keys}
    expected_te = {"sd15": {"lora_te"}, "sdxl": {"lora_te1", "lora_te2"}}[family]
    assert prefixes == ({"lora_unet"} | (set() if cfg.network_train_unet_only else expected_te))
    assert meta["ss_base_model_version"] == {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}[family]
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["modelspec.architecture"].endswith("/lora")
