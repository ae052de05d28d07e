"""Flux.1 dev/schnell: training on tiny random-weight models, the saved LoRA in diffusers, resume, bad bases."""
from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors import safe_open

from core.config.toml_io import ConfigError, save_config, validate
from core.models.flux import flow_sigmas
from test_resume import _assert_same, _events, _start, _wait_for
from tiny_flux import make_tiny_flux
from train_helpers import CaptureLogs, run_cli, tiny_config, train_in_process

T5_LEN = 32
PROMPT = "zqx, a red square"


@pytest.fixture(scope="session")
def tiny_flux_dev():
    return make_tiny_flux("dev")


@pytest.fixture(scope="session")
def tiny_flux_schnell():
    return make_tiny_flux("schnell")


def flux_config(model, data, out, **kw):
    base = dict(t5xxl_max_token_length=T5_LEN, resolution="64", bucket_reso_steps=32)
    base.update(kw)
    return tiny_config(model, data, out, **base)


def transformer_inputs(tr, batch: int = 2, tokens: int = 16, text: int = T5_LEN):
    g = torch.Generator().manual_seed(0)
    c = tr.config
    side = int(tokens ** 0.5)
    ids = torch.zeros(side, side, 3)
    ids[..., 1] = torch.arange(side)[:, None]
    ids[..., 2] = torch.arange(side)[None, :]
    return dict(hidden_states=torch.randn(batch, tokens, c.in_channels, generator=g),
                encoder_hidden_states=torch.randn(batch, text, c.joint_attention_dim, generator=g),
                pooled_projections=torch.randn(batch, c.pooled_projection_dim, generator=g),
                timestep=torch.tensor([0.3, 0.9][:batch]), img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(text, 3),
                guidance=torch.full((batch,), 3.5) if c.guidance_embeds else None)


@torch.no_grad()
def transformer_out(tr, inputs) -> torch.Tensor:
    return tr(**inputs, return_dict=False)[0]


@torch.no_grad()
def clip_pooled(te, tok, text: str = PROMPT) -> torch.Tensor:
    ids = tok([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return te(ids).pooler_output


@pytest.mark.parametrize("variant,kw", [
    ("dev", dict(network_train_unet_only=False)),
    ("schnell", dict(network_train_unet_only=True, flux_lora_layers="attention")),
])
def test_saved_flux_lora_reproduces_trained_model_in_diffusers(variant, kw, request, tiny_dataset, tmp_path):
    from diffusers import FluxPipeline

    model = request.getfixturevalue(f"tiny_flux_{variant}")
    cfg = flux_config(model, tiny_dataset, tmp_path, max_train_steps=8, trigger_word="zqx", **kw)
    trainer = train_in_process(cfg)
    comps = trainer.comps
    tr = comps.denoiser.eval()
    inputs = transformer_inputs(tr)
    trained = transformer_out(tr, inputs)
    pipe = FluxPipeline.from_pretrained(model, dtype=torch.float32, local_files_only=True)
    base = transformer_out(pipe.transformer, inputs)
    assert (trained - base).abs().max() > 1e-3, "training changed nothing: the test would prove nothing"
    if cfg.train_text_encoder:
        trained_pooled = clip_pooled(comps.text_encoders[0].eval(), comps.tokenizers[0])
        assert (trained_pooled - clip_pooled(pipe.text_encoder, pipe.tokenizer)).abs().max() > 1e-4
    with CaptureLogs() as logs:
        pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    assert logs.key_problems(text_encoder_trained=cfg.train_text_encoder) == []
    assert (transformer_out(pipe.transformer, inputs) - trained).abs().max() < 1e-4
    if cfg.train_text_encoder:
        assert (clip_pooled(pipe.text_encoder, pipe.tokenizer) - trained_pooled).abs().max() < 1e-4

    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    modules = {k.rsplit(".lora_", 1)[0] for k in keys}
    tr_modules = {m for m in modules if m.startswith("transformer.")}
    if kw.get("flux_lora_layers") == "attention":
        assert all(".attn." in m for m in tr_modules) and len(tr_modules) == 11  # 8 in the double block, q/k/v in the single
    else:  # every Linear of both block types, not the final layer
        assert len(tr_modules) == 20
        assert any(m.endswith("norm1.linear") for m in tr_modules) and any(m.endswith("proj_mlp") for m in tr_modules)
        assert not any(m.startswith("transformer.proj_out") or "norm_out" in m for m in tr_modules)
    te_modules = modules - tr_modules
    assert all(m.startswith("text_encoder.text_model.encoder.layers.") for m in te_modules)
    assert bool(te_modules) == cfg.train_text_encoder
    assert not any(k.endswith(".alpha") for k in keys), "alpha is folded into lora_B (scale 1 in every loader)"
    assert meta["ss_base_model_version"] == "flux1" and meta["ss_network_module"] == "networks.lora_flux"
    assert meta["modelspec.architecture"] == f"flux-1-{variant}/lora"
    assert meta["modelspec.implementation"] == "https://github.com/black-forest-labs/flux"
    assert meta["modelspec.trigger_phrase"] == "zqx" and meta["ss_flux_variant"] == variant
    assert "lora_adapter_metadata" not in meta


def test_flux_cli_run_makes_samples_and_frees_text_encoders(tiny_flux_dev, tiny_dataset, tmp_path):
    cfg = flux_config(tiny_flux_dev, tiny_dataset, tmp_path, max_train_steps=4, network_train_unet_only=True,
                      sample_prompts=[f"{PROMPT} --w 64 --h 64 --s 3 --g 3.5"], sample_every_n_epochs=0,
                      sample_every_n_steps=2, sample_at_first=True)
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    r = run_cli("train", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    log = (tmp_path / "lora" / "train.log").read_text()
    assert "Loaded a Flux.1 model" in log and "T5-XXL and CLIP-L freed from memory" in log
    events = _events(tmp_path)
    samples = [p for e in events if e["type"] == "sample" for p in e["paths"]]
    assert len(samples) >= 3
    from PIL import Image

    img = Image.open(samples[-1])
    assert img.size == (64, 64)
    assert "Distilled CFG Scale: 3.5" in img.info["parameters"] and "Steps: 3" in img.info["parameters"]
    assert events[-1]["status"] == "completed"


def test_flux_sigkill_then_resume_is_bit_identical(tiny_flux_dev, tiny_dataset, tmp_path):
    def config(out):
        out.mkdir(parents=True, exist_ok=True)
        cfg = flux_config(tiny_flux_dev, tiny_dataset, out, max_train_steps=30, save_state_every_n_steps=4,
                          learning_rate=1e-3, network_train_unet_only=False)
        save_config(cfg, out / "run.toml")
        return out / "run.toml"

    ref = config(tmp_path / "ref")
    r = run_cli("train", "--config", str(ref))
    assert r.returncode == 0, r.stdout + r.stderr
    run = config(tmp_path / "run")
    proc = _start(run)
    _wait_for(tmp_path / "run", lambda e: e["type"] == "checkpoint" and e["kind"] == "state" and e["step"] >= 8, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert _events(tmp_path / "run")[-1]["type"] != "end"
    r = run_cli("train", "--config", str(run), "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_same(tmp_path / "run" / "lora.safetensors", tmp_path / "ref" / "lora.safetensors")


def test_timestep_sampling_follows_sd_scripts():
    g = torch.Generator().manual_seed(0)
    n = 20000
    common = dict(sigmoid_scale=1.0, shift=3.1582, image_tokens=1024)
    sig = flow_sigmas("sigmoid", n, g, **common)
    shifted = flow_sigmas("shift", n, g, **common)
    uni = flow_sigmas("uniform", n, g, **common)
    table = flow_sigmas("sigma", n, g, **common)
    fs = flow_sigmas("flux_shift", n, g, **common)
    for s in (sig, shifted, uni, table, fs):
        assert 0 < s.min() and s.max() <= 1
    assert abs(sig.mean() - 0.5) < 0.01 and abs(uni.mean() - 0.5) < 0.01
    assert shifted.mean() > 0.65  # shift 3.16 moves the draws towards more noise
    assert fs.mean() > sig.mean() + 0.05
    # the shift formula itself: k s / (1 + (k - 1) s)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s0 = flow_sigmas("sigmoid", 8, g1, **common)
    assert torch.allclose(flow_sigmas("shift", 8, g2, **common), 3.1582 * s0 / (1 + 2.1582 * s0))


def test_flux_settings_are_validated_by_name():
    for key, value in (("timestep_sampling", "logit"), ("discrete_flow_shift", -1), ("guidance_scale", 500),
                       ("t5xxl_max_token_length", 4096), ("model_prediction_type", "eps")):
        with pytest.raises(ConfigError) as e:
            validate({key: value})
        assert key in str(e.value)


def test_flux_refuses_dora_and_sizes_not_multiple_of_16(tiny_flux_dev, tiny_dataset, tmp_path):
    for i, (kw, words) in enumerate(((dict(use_dora=True), "use_dora"), (dict(resolution="72"), "multiples of 16"),
                                     (dict(network_type="lokr"), "network_type loha / lokr is not available for Flux"))):
        cfg = flux_config(tiny_flux_dev, tiny_dataset, tmp_path / str(i), max_train_steps=2, **kw)
        save_config(cfg, tmp_path / f"{i}.toml")
        r = run_cli("train", "--config", str(tmp_path / f"{i}.toml"))
        assert r.returncode == 2 and words in r.stdout + r.stderr, r.stdout + r.stderr


def test_unsupported_flux_relatives_and_flux_loras_are_refused_as_base(tmp_path, tiny_dataset):
    from safetensors.torch import save_file

    def t():
        return torch.zeros(2, 2)

    files = {
        "flux2.safetensors": ({"double_blocks.0.img_attn.norm.key_norm.scale": t(),
                               "single_stream_modulation.lin.weight": t()}, "FLUX.2"),
        "chroma.safetensors": ({"double_blocks.0.img_attn.norm.key_norm.scale": t(),
                                "distilled_guidance_layer.in_proj.bias": t()}, "Chroma"),
        "flux_lora.safetensors": ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": t(),
                                   "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": t()}, "LoRA"),
    }
    for name, (tensors, words) in files.items():
        save_file(tensors, str(tmp_path / name))
        cfg = tiny_config(tmp_path / name, tiny_dataset, tmp_path / name.split(".")[0], max_train_steps=1)
        save_config(cfg, tmp_path / "run.toml")
        r = run_cli("train", "--config", str(tmp_path / "run.toml"))
        out = r.stdout + r.stderr
        assert r.returncode == 2 and words in out and "not" in out, out
        assert "Traceback" not in r.stdout


def test_generate_tab_engine_uses_flux_loras(tiny_flux_dev, tiny_dataset, tmp_path):
    import numpy as np

    from core.generation.engine import Generator

    cfg = flux_config(tiny_flux_dev, tiny_dataset, tmp_path, max_train_steps=8, learning_rate=5e-2,
                      network_train_unet_only=True)
    train_in_process(cfg)
    lora = str(tmp_path / "lora.safetensors")
    gen = Generator(tmp_path / "generated", [str(tmp_path)], model=str(tiny_flux_dev))
    kw = dict(seed=3, steps=3, guidance=3.5, width=72, height=64, save=True)
    base = gen.generate(PROMPT, negative="ignored", **kw)[0]
    with_lora = gen.generate(f"{PROMPT} <lora:lora:1>", **kw)[0]
    off = gen.generate(PROMPT, loras=[(lora, 0.0)], **kw)[0]
    assert gen.warnings == []
    assert base.image.size == (64, 64)  # Flux sizes are multiples of 16
    a, b, c = (np.asarray(r.image, dtype=np.float32) for r in (base, with_lora, off))
    assert np.abs(a - b).max() > 1, "the LoRA changed nothing"
    assert np.array_equal(a, c), "strength 0 is the base model"
    assert "Distilled CFG Scale: 3.5" in with_lora.parameters and "<lora:lora:1>" in with_lora.parameters
    assert "Negative prompt" not in base.parameters
    grid = gen.compare_grid(PROMPT, lora_files=[lora], strengths=[0, 1.0], seed=3, steps=3, guidance=3.5,
                            width=64, height=64)
    assert len(grid.cells[0]) == 2 and grid.path


@pytest.mark.parametrize("family", ["flux", "sd15"])
def test_text_encoder_outputs_cached_to_disk_are_reused(family, tiny_flux_dev, tiny_sd15, tiny_dataset, tmp_path,
                                                        one_thread):
    from safetensors.torch import load_file

    model = tiny_flux_dev if family == "flux" else tiny_sd15
    make = flux_config if family == "flux" else tiny_config
    logs, loras = [], []
    for run in ("a", "b"):
        cfg = make(model, tiny_dataset, tmp_path, output_name=run, max_train_steps=3, network_train_unet_only=True,
                   cache_text_encoder_outputs=True, cache_text_encoder_outputs_to_disk=True)
        train_in_process(cfg)
        logs.append((tmp_path / run / "train.log").read_text())
        loras.append(load_file(str(tmp_path / f"{run}.safetensors")))
    assert "read from the disk cache" not in logs[0]
    assert "(4 read from the disk cache)" in logs[1], logs[1]
    assert len(list((tmp_path / "cache" / "text").glob("*.safetensors"))) == 4
    # the same training from cached text: the same bits (one thread: see the one_thread fixture)
    assert all(torch.equal(loras[0][k], loras[1][k]) for k in loras[0])
