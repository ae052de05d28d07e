"""FLUX.2 klein: training on tiny random-weight models, the saved LoRA in diffusers and under ComfyUI's key rules,
single files from a ComfyUI models folder, resume, detection and the distilled-model warning."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from core.config.toml_io import save_config
from core.models.detect import detect_single_file_family
from test_resume import _assert_same, sigkill_then_resume
from tiny_klein import klein_to_bfl, make_klein_single_files, make_tiny_klein
from train_helpers import CaptureLogs, run_cli, tiny_config, train_in_process

PROMPT = "zqx, a red square"


@pytest.fixture(scope="session")
def tiny_klein_base():
    return make_tiny_klein("base")


@pytest.fixture(scope="session")
def tiny_klein_distilled():
    return make_tiny_klein("distilled")


@pytest.fixture(scope="session")
def klein_files():
    return make_klein_single_files()


def klein_config(model, data, out, **kw):
    base = dict(model_family="auto", resolution="64", bucket_reso_steps=32, timestep_sampling="flux2_shift",
                network_train_unet_only=True)
    base.update(kw)
    return tiny_config(model, data, out, **base)


def transformer_inputs(tr, batch: int = 2, side: int = 4, text: int = 12):
    from diffusers import Flux2KleinPipeline

    g = torch.Generator().manual_seed(0)
    c = tr.config
    x = torch.randn(batch, c.in_channels, side, side, generator=g)
    hidden = torch.randn(batch, text, c.joint_attention_dim, generator=g)
    return dict(hidden_states=x.reshape(batch, c.in_channels, -1).permute(0, 2, 1), encoder_hidden_states=hidden,
                timestep=torch.tensor([0.3, 0.9][:batch]), img_ids=Flux2KleinPipeline._prepare_latent_ids(x),
                txt_ids=Flux2KleinPipeline._prepare_text_ids(hidden), guidance=None)


@torch.no_grad()
def transformer_out(tr, inputs) -> torch.Tensor:
    return tr(**inputs, return_dict=False)[0]


def test_saved_klein_lora_reproduces_trained_model_in_diffusers(tiny_klein_base, tiny_dataset, tmp_path):
    from diffusers import Flux2KleinPipeline

    cfg = klein_config(tiny_klein_base, tiny_dataset, tmp_path, max_train_steps=8, trigger_word="zqx")
    trainer = train_in_process(cfg)
    tr = trainer.comps.denoiser.eval()
    inputs = transformer_inputs(tr)
    trained = transformer_out(tr, inputs)
    pipe = Flux2KleinPipeline.from_pretrained(tiny_klein_base, dtype=torch.float32, local_files_only=True)
    base = transformer_out(pipe.transformer, inputs)
    assert (trained - base).abs().max() > 1e-3, "training changed nothing: the test would prove nothing"
    with CaptureLogs() as logs:
        pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    assert logs.key_problems(text_encoder_trained=False) == []
    assert (transformer_out(pipe.transformer, inputs) - trained).abs().max() < 1e-4

    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    modules = {k.rsplit(".lora_", 1)[0] for k in keys}
    assert all(m.startswith(("transformer.transformer_blocks.", "transformer.single_transformer_blocks."))
               for m in modules)
    # attention (q/k/v/out, add_q/k/v, to_add_out) and feed-forward (linear_in/out of ff and ff_context) of the
    # double block, fused attention+MLP input and output of the single block
    assert len(modules) == 14
    assert any(m.endswith("ff.linear_in") for m in modules) and any(m.endswith("to_qkv_mlp_proj") for m in modules)
    assert not any(k.endswith(".alpha") for k in keys), "alpha is folded into lora_B (scale 1 in every loader)"
    assert meta["ss_base_model_version"] == "flux2_klein_4b" and meta["ss_network_module"] == "networks.lora_flux2"
    assert meta["modelspec.architecture"] == "flux-2-klein-4b/lora" and meta["ss_flux2_variant"] == "klein-base-4b"
    assert meta["modelspec.trigger_phrase"] == "zqx" and meta["ss_timestep_sampling"] == "flux2_shift"
    assert "lora_adapter_metadata" not in meta


def test_klein_lora_keys_all_map_in_comfyui_at_the_trained_strength(tiny_klein_base, tiny_dataset, tmp_path):
    """ComfyUI maps transformer.<diffusers name> through flux_to_diffusers (its Flux 2 entries) onto the BFL
    weights: every key is loaded, and the patched BFL weights equal the trained transformer's, converted."""
    from comfy_flux import apply_lora, lora_key_map
    from diffusers import Flux2KleinPipeline
    from safetensors.torch import load_file

    cfg = klein_config(tiny_klein_base, tiny_dataset, tmp_path, max_train_steps=4, network_dim=4, network_alpha=1)
    trainer = train_in_process(cfg)
    trained_bfl = klein_to_bfl({k: v.detach() for k, v in trainer.comps.denoiser.state_dict().items()
                                if "lora_" not in k and "base_layer" not in k} | _merged(trainer.comps.denoiser))
    pipe = Flux2KleinPipeline.from_pretrained(tiny_klein_base, dtype=torch.float32, local_files_only=True)
    base_bfl = klein_to_bfl(pipe.transformer.state_dict())
    c = pipe.transformer.config
    key_map = lora_key_map(["diffusion_model." + k for k in base_bfl], c.num_layers, c.num_single_layers,
                           c.num_attention_heads * c.attention_head_dim)
    patched, not_loaded = apply_lora({"diffusion_model." + k: v for k, v in base_bfl.items()},
                                     load_file(str(tmp_path / "lora.safetensors")), key_map)
    assert not_loaded == [], f"ComfyUI would say 'lora key not loaded' for {not_loaded[:5]}"
    changed = 0
    for k, v in trained_bfl.items():
        now = patched.get("diffusion_model." + k, base_bfl[k])
        assert (now - v).abs().max() < 1e-4, k
        changed += bool((v - base_bfl[k]).abs().max() > 1e-6)
    assert changed >= 10


def _merged(model) -> dict[str, torch.Tensor]:
    """The trained transformer's effective weights (LoRA merged), under the plain diffusers names."""
    out = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "get_delta_weight") and hasattr(mod, "base_layer"):
            w = mod.base_layer.weight.detach() + sum(mod.get_delta_weight(a) for a in mod.active_adapters)
            out[f"{name}.weight"] = w
            if mod.base_layer.bias is not None:
                out[f"{name}.bias"] = mod.base_layer.bias.detach()
    return {k.replace(".base_layer", ""): v for k, v in out.items()}


def test_klein_cli_run_caches_text_frees_qwen3_and_samples_with_cfg(tiny_klein_base, tiny_dataset, tmp_path):
    cfg = klein_config(tiny_klein_base, tiny_dataset, tmp_path, max_train_steps=4,
                       sample_prompts=[f"{PROMPT} --n blurry --w 64 --h 64 --s 3 --l 4"], sample_every_n_epochs=0,
                       sample_every_n_steps=2, sample_at_first=True)
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    r = run_cli("train", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    log = (tmp_path / "lora" / "train.log").read_text()
    assert "Loaded a FLUX.2 klein model" in log and "Qwen3 freed from memory" in log
    samples = sorted((tmp_path / "lora" / "samples").glob("*.png"))
    assert len(samples) == 3
    from PIL import Image

    params = Image.open(samples[0]).info["parameters"]
    assert "Negative prompt: blurry" in params and "CFG scale: 4" in params and "Steps: 3" in params


def test_distilled_klein_trains_with_a_warning_that_says_why_base_is_better(tiny_klein_distilled, tiny_dataset,
                                                                           tmp_path):
    cfg = klein_config(tiny_klein_distilled, tiny_dataset, tmp_path, max_train_steps=2)
    trainer = train_in_process(cfg)
    log = (tmp_path / "lora" / "train.log").read_text()
    assert "distilled FLUX.2 klein" in log and "klein base" in log
    assert trainer.comps.extra["variant"] == "4b"
    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        assert f.metadata()["ss_flux2_variant"] == "klein-4b"


def test_klein_from_comfyui_single_files_loads_the_same_model(klein_files, tiny_dataset, tmp_path):
    from diffusers import Flux2KleinPipeline

    from core.models.loading import load_pipeline

    files = klein_files
    settings = dict(qwen3=str(files / "qwen_3_4b.safetensors"), ae=str(files / "flux2-vae.safetensors"))
    pipe, fam = load_pipeline(str(files / "flux-2-klein-base-4b.safetensors"), base_config_dir=str(files / "config"),
                              settings=settings)
    assert fam.name == "flux2_klein" and not pipe.config.is_distilled
    ref = Flux2KleinPipeline.from_pretrained(files / "reference", dtype=torch.float32, local_files_only=True)
    for name in ("transformer", "vae", "text_encoder"):
        mine, theirs = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        theirs.pop("lm_head.weight", None)  # Qwen3's output head is dropped on load: only hidden states are used
        assert set(theirs) <= set(mine), name
        for k, v in theirs.items():
            assert torch.equal(mine[k].float(), v.float()), f"{name}.{k}"
    assert isinstance(pipe.text_encoder.lm_head, torch.nn.Identity)
    # an fp8 transformer file saved by ComfyUI (model.diffusion_model. prefix) is upcast on load
    from safetensors.torch import load_file, save_file

    fp8 = tmp_path / "flux-2-klein-base-4b-fp8.safetensors"
    save_file({f"model.diffusion_model.{k}": v.to(torch.float8_e4m3fn)
               for k, v in load_file(files / "flux-2-klein-base-4b.safetensors").items()}, str(fp8))
    pipe8, _ = load_pipeline(str(fp8), base_config_dir=str(files / "config"), settings=settings)
    for k, v in ref.transformer.state_dict().items():
        got = pipe8.transformer.state_dict()[k]
        assert got.dtype == torch.float32 and (got - v).abs().max() <= 0.07 * v.abs().max() + 1e-6, k
    # a CLI run from the files
    cfg = klein_config(files / "flux-2-klein-base-4b.safetensors", tiny_dataset, tmp_path, max_train_steps=2,
                       base_config_dir=str(files / "config"), **settings)
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    r = run_cli("train", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr


def test_klein_transformer_file_without_its_parts_says_which_file_to_set(klein_files, tiny_dataset, tmp_path):
    cfg = klein_config(klein_files / "flux-2-klein-base-4b.safetensors", tiny_dataset, tmp_path, max_train_steps=1,
                       base_config_dir=str(klein_files / "config"))
    config = tmp_path / "run.toml"
    save_config(cfg, config)
    r = run_cli("train", "--config", str(config))
    assert r.returncode != 0
    assert "set ae to the FLUX.2 autoencoder (flux2-vae.safetensors)" in r.stdout + r.stderr


def test_klein_and_flux2_dev_files_are_told_apart_by_width():
    def shapes(width):
        return {"double_blocks.0.img_attn.qkv.weight": (3 * width, width),
                "single_stream_modulation.lin.weight": (3 * width, width),
                "double_stream_modulation_img.lin.weight": (6 * width, width)}

    assert detect_single_file_family(shapes(3072)).family == "flux2_klein"
    assert detect_single_file_family(shapes(4096)).family == "flux2_klein"
    assert detect_single_file_family(shapes(6144)).family == "flux2"
    assert detect_single_file_family({"model.diffusion_model." + k: v for k, v in shapes(3072).items()}).family \
        == "flux2_klein"


def test_klein_sigkill_then_resume_is_bit_identical(tiny_klein_base, tiny_dataset, tmp_path, one_thread):
    out = sigkill_then_resume(tiny_klein_base, tiny_dataset, tmp_path, timestep_sampling="flux2_shift",
                              network_train_unet_only=True)
    _assert_same(out / "lora.safetensors", tmp_path / "reference" / "lora.safetensors")


def test_generate_uses_klein_loras_with_cfg_and_a_negative_prompt_and_makes_a_grid(tiny_klein_base, tiny_dataset,
                                                                                  tmp_path):
    import numpy as np

    from core.generation.engine import Generator

    out = tmp_path / "loras"
    train_in_process(klein_config(tiny_klein_base, tiny_dataset, out, output_name="zqx_klein", max_train_steps=6,
                                  save_every_n_steps=3, learning_rate=5e-2))
    final = out / "zqx_klein.safetensors"
    gen = Generator(tmp_path / "generated", [str(out)], model=str(tiny_klein_base))
    small = dict(steps=3, width=64, height=64, sampler="euler", guidance=4.0)

    def px(loras=(), negative="", **kw):
        (res,) = gen.generate(PROMPT, negative, list(loras), seed=7, **{**small, **kw})
        return np.asarray(res.image.convert("RGB")).astype(np.int16), res.parameters

    base, _ = px()
    on, params = px([(str(final), 1.0)])
    zero, _ = px([(str(final), 0.0)])
    assert np.abs(on - base).max() > 0 and np.array_equal(zero, base)
    assert gen.warnings == [], gen.warnings  # no "unexpected keys" from diffusers' klein loader
    assert "CFG scale: 4" in params and "zqx_klein" in params and "Sampler: Euler," in params
    neg, params = px(negative="blurry")
    assert np.abs(neg - base).max() > 0 and "Negative prompt: blurry" in params
    grid = gen.compare_grid(PROMPT, "", [str(out / "zqx_klein-step00000003.safetensors"), str(final)],
                            strengths=(0.0, 1.0), seed=7, **small)
    assert grid.image.size[0] > 64 * 2 and len(grid.cells) == 2


def test_qwen3_in_fp8_while_caching(tiny_klein_base, tiny_dataset, tmp_path):
    """qwen3_precision fp8: Qwen3's Linear weights are float8 while the captions are encoded, the outputs stay in
    the compute dtype and close to the bf16 ones, the log says so, and the estimate halves Qwen3's share."""
    from core.estimate import estimate
    from core.models.t5_fp8 import FP8

    cfg = klein_config(tiny_klein_base, tiny_dataset, tmp_path, max_train_steps=1, qwen3_precision="fp8")
    trainer = train_in_process(cfg)
    log = (tmp_path / "lora" / "train.log").read_text()
    assert "Qwen3 stored in fp8 while caching" in log and "qwen3_precision fp8: Qwen3 is stored in fp8" in log
    cached = next(iter(trainer.comps.extra["text_cache"].values())).hidden_states
    assert cached.dtype == torch.float32
    from core.models.loading import load_pipeline

    pipe, fam = load_pipeline(str(tiny_klein_base), settings={"qwen3_precision": "fp8"})
    assert {m.weight.dtype for m in pipe.text_encoder.modules() if isinstance(m, torch.nn.Linear)} == {FP8}
    assert pipe.text_encoder.get_input_embeddings().weight.dtype == torch.float32
    from core.config.toml_io import validate

    real = dict(resolution="1024", mixed_precision="bf16", gradient_checkpointing=True, base_precision="fp8",
                network_train_unet_only=True)  # the real klein base 4B (the shipped configs)
    bf16 = estimate(validate(real), "flux2_klein")
    fp8 = estimate(validate({**real, "qwen3_precision": "fp8"}), "flux2_klein")
    assert bf16.phase == "caching" and fp8.caching_gb < bf16.caching_gb - 3, (bf16.caching_gb, fp8.caching_gb)
    assert fp8.settings["qwen3_precision"] == "fp8" and "t5xxl_precision" not in fp8.settings


def test_guided_start_fills_the_form_for_a_klein_base_on_8_gb(tiny_klein_base, tiny_dataset):
    from core.config.guided import guided_start

    g = guided_start("character", str(tiny_klein_base), None, str(tiny_dataset), 8)
    assert g.ok and g.family == "flux2_klein", g.problems
    v = g.values
    assert (v["base_precision"], v["qwen3_precision"], v["timestep_sampling"]) == ("fp8", "fp8", "flux2_shift")
    assert any("Qwen3 in fp8" in r for r in g.reasons)


def test_klein_attention_only_lora(tiny_klein_base, tiny_dataset, tmp_path):
    train_in_process(klein_config(tiny_klein_base, tiny_dataset, tmp_path, max_train_steps=2,
                                  flux_lora_layers="attention"))
    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        modules = {k.rsplit(".lora_", 1)[0] for k in f.keys()}
    # q/k/v/out and the text stream's add_q/k/v and to_add_out of the double block; the single block's fused
    # attention + MLP input and output (BFL fuses them, so attention-only cannot leave the MLP out there)
    assert len(modules) == 10 and all(".attn." in m for m in modules)
