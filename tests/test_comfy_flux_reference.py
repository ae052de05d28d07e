"""Validates tests/comfy_flux.py (our re-implementation of ComfyUI's Flux LoRA loading) against
independent references: diffusers' BFL -> diffusers checkpoint converter for the key mapping, and
diffusers' own peft LoRA loading + fusing for the weight change."""
from __future__ import annotations

import copy

import pytest
import torch

import comfy_flux as cf

diffusers = pytest.importorskip("diffusers")
from diffusers import FluxTransformer2DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers  # noqa: E402

TINY = dict(in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)

# Every Linear of the tiny model, which covers the brief's list (attn.to_q, attn.add_k_proj,
# ff.net.0.proj, norm1.linear, single proj_mlp, proj_out, single norm.linear, norm_out.linear).
LINEARS = [
    "time_text_embed.timestep_embedder.linear_1", "time_text_embed.timestep_embedder.linear_2",
    "time_text_embed.guidance_embedder.linear_1", "time_text_embed.guidance_embedder.linear_2",
    "time_text_embed.text_embedder.linear_1", "time_text_embed.text_embedder.linear_2",
    "context_embedder", "x_embedder",
    "transformer_blocks.0.norm1.linear", "transformer_blocks.0.norm1_context.linear",
    "transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
    "transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.attn.add_q_proj",
    "transformer_blocks.0.attn.add_k_proj", "transformer_blocks.0.attn.add_v_proj",
    "transformer_blocks.0.attn.to_add_out", "transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.2",
    "transformer_blocks.0.ff_context.net.0.proj", "transformer_blocks.0.ff_context.net.2",
    "single_transformer_blocks.0.norm.linear", "single_transformer_blocks.0.proj_mlp",
    "single_transformer_blocks.0.proj_out", "single_transformer_blocks.0.attn.to_q",
    "single_transformer_blocks.0.attn.to_k", "single_transformer_blocks.0.attn.to_v",
    "norm_out.linear", "proj_out",
]

# BFL parameter names of a Flux.1 transformer with guidance (black-forest-labs/flux model.py).
BFL_DOUBLE = ["img_mod.lin", "img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2",
              "txt_mod.lin", "txt_attn.qkv", "txt_attn.proj", "txt_mlp.0", "txt_mlp.2"]
BFL_DOUBLE_NORMS = ["img_attn.norm.query_norm.scale", "img_attn.norm.key_norm.scale",
                    "txt_attn.norm.query_norm.scale", "txt_attn.norm.key_norm.scale"]
BFL_SINGLE = ["linear1", "linear2", "modulation.lin"]
BFL_SINGLE_NORMS = ["norm.query_norm.scale", "norm.key_norm.scale"]
BFL_TOP = ["img_in", "txt_in", "time_in.in_layer", "time_in.out_layer", "vector_in.in_layer",
           "vector_in.out_layer", "guidance_in.in_layer", "guidance_in.out_layer", "final_layer.linear",
           "final_layer.adaLN_modulation.1"]


def bfl_flux_keys(num_layers: int, num_single_layers: int) -> set[str]:
    keys = {f"{m}.{e}" for m in BFL_TOP for e in ("weight", "bias")}
    for i in range(num_layers):
        keys |= {f"double_blocks.{i}.{m}.{e}" for m in BFL_DOUBLE for e in ("weight", "bias")}
        keys |= {f"double_blocks.{i}.{n}" for n in BFL_DOUBLE_NORMS}
    for i in range(num_single_layers):
        keys |= {f"single_blocks.{i}.{m}.{e}" for m in BFL_SINGLE for e in ("weight", "bias")}
        keys |= {f"single_blocks.{i}.{n}" for n in BFL_SINGLE_NORMS}
    return keys


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = FluxTransformer2DModel(**TINY).eval()
    for p in model.parameters():  # diffusers zero-inits some layers; make every weight distinct
        torch.nn.init.normal_(p, std=0.2)
    cfg = cf.bfl_to_diffusers_keys_for_model(model)
    return model, cfg


def test_config_helper(tiny):
    _, cfg = tiny
    assert cfg == {"num_layers": 1, "num_single_layers": 1, "hidden_size": 32}


def test_mapping_is_inverse_of_diffusers_converter():
    """At the real Flux width (diffusers' converter hardcodes 3072), diffusers -> BFL with our
    mapping produces exactly the BFL keys of Flux.1, and diffusers' BFL -> diffusers converter gives
    back every tensor unchanged."""
    hidden, n_double, n_single = 3072, 2, 2
    torch.manual_seed(1)
    names = FluxTransformer2DModel(**{**TINY, "num_layers": n_double, "num_single_layers": n_single}).state_dict()
    rows = {"to_q": hidden, "to_k": hidden, "to_v": hidden, "add_q_proj": hidden, "add_k_proj": hidden,
            "add_v_proj": hidden, "proj_mlp": hidden * 4}
    d_sd = {}
    for k, v in names.items():
        module = k.rsplit(".", 2)[-2]
        n = rows.get(module, 6)
        d_sd[k] = torch.randn((n,) if v.dim() == 1 else (n, 2))

    fmap = cf.flux_to_diffusers(n_double, n_single, hidden)
    assert set(d_sd) <= set(fmap), sorted(set(d_sd) - set(fmap))
    bfl = cf.diffusers_to_bfl(d_sd, n_double, n_single, hidden)
    assert set(bfl) == bfl_flux_keys(n_double, n_single)
    assert bfl["double_blocks.0.img_attn.qkv.weight"].shape[0] == 3 * hidden
    assert bfl["single_blocks.1.linear1.weight"].shape[0] == 7 * hidden

    checkpoint = dict(bfl)
    back = convert_flux_transformer_checkpoint_to_diffusers(checkpoint)
    assert checkpoint == {}, f"BFL keys diffusers does not consume: {sorted(checkpoint)}"
    assert set(back) == set(d_sd)
    for k in d_sd:
        assert torch.equal(back[k], d_sd[k]), k


def test_tiny_model_every_key_mapped(tiny):
    model, cfg = tiny
    sd = model.state_dict()
    fmap = cf.flux_to_diffusers(**cfg)
    assert set(sd) <= set(fmap), sorted(set(sd) - set(fmap))
    bfl = cf.diffusers_to_bfl(sd, **cfg)
    assert set(bfl) == bfl_flux_keys(1, 1)
    assert tuple(bfl["double_blocks.0.txt_attn.qkv.weight"].shape) == (96, 32)
    assert tuple(bfl["single_blocks.0.linear1.weight"].shape) == (96 + 128, 32)
    key_map = cf.lora_key_map(list(bfl), **cfg)
    for name in LINEARS:  # every trainable Linear is reachable by its diffusers name
        assert f"transformer.{name}" in key_map, name


def random_lora(modules, model, rank=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    out = {}
    for name in modules:
        m = mods[name]
        out[name] = (torch.randn(rank, m.in_features, generator=g) * 0.3,
                     torch.randn(m.out_features, rank, generator=g) * 0.3)
    return out


def diffusers_reference(model, factors, strength):
    """Weights after diffusers' own peft loading + fusing of the LoRA (diffusers layout)."""
    ref = copy.deepcopy(model)
    sd = {}
    for name, (a, b) in factors.items():
        sd[f"transformer.{name}.lora_A.weight"] = a.clone()
        sd[f"transformer.{name}.lora_B.weight"] = b.clone()
    ref.load_lora_adapter(sd, prefix="transformer", adapter_name="ref")
    ref.fuse_lora(lora_scale=strength)
    ref.unload_lora()
    return ref.state_dict()


SPELLINGS = {
    "peft": lambda d: (f"transformer.{d}", ".lora_A.weight", ".lora_B.weight"),
    "onetrainer": lambda d: (f"lora_transformer_{d.replace('.', '_')}", ".lora_down.weight", ".lora_up.weight"),
    "lycoris": lambda d: (f"lycoris_{d.replace('.', '_')}", ".lora_down.weight", ".lora_up.weight"),
    "diffsynth": lambda d: (d, ".lora_A.weight", ".lora_B.weight"),
    "lora.up": lambda d: (f"transformer.{d}", ".lora.down.weight", ".lora.up.weight"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("with_alpha", [False, True])
def test_lora_matches_diffusers_fuse(tiny, spelling, with_alpha):
    model, cfg = tiny
    rank, strength = 4, 0.7
    factors = random_lora(LINEARS, model, rank)
    lora = {}
    for name, (a, b) in factors.items():
        prefix, down, up = SPELLINGS[spelling](name)
        lora[prefix + down] = a
        lora[prefix + up] = b
        if with_alpha:
            lora[prefix + ".alpha"] = torch.tensor(float(rank) / 2)  # ComfyUI scale = alpha / rank = 0.5
    ref_factors = {n: (a, b * 0.5) if with_alpha else (a, b) for n, (a, b) in factors.items()}
    expected = cf.diffusers_to_bfl(diffusers_reference(model, ref_factors, strength), **cfg)

    base = cf.diffusers_to_bfl(model.state_dict(), **cfg)
    key_map = cf.lora_key_map(list(base), **cfg)
    patched, not_loaded = cf.apply_lora(base, lora, key_map, strength)
    assert not_loaded == []
    merged = {**base, **patched}
    assert set(merged) == set(expected)
    for k in expected:
        torch.testing.assert_close(merged[k], expected[k], rtol=1e-5, atol=1e-5, msg=k)
    # exactly the fused weights of all Linear modules changed, biases and norms did not
    assert {k for k in patched if not torch.equal(patched[k], base[k])} == {
        k for k in base if k.endswith(".weight") and base[k].dim() == 2}


def test_model_keys_with_comfy_prefix(tiny):
    model, cfg = tiny
    factors = random_lora(["single_transformer_blocks.0.proj_mlp", "norm_out.linear"], model)
    lora = {f"transformer.{n}.lora_{s}.weight": t for n, (a, b) in factors.items() for s, t in (("A", a), ("B", b))}
    base = {cf.DIFFUSION_PREFIX + k: v for k, v in cf.diffusers_to_bfl(model.state_dict(), **cfg).items()}
    key_map = cf.lora_key_map(list(base), **cfg)
    patched, not_loaded = cf.apply_lora(base, lora, key_map)
    assert not_loaded == []
    assert set(patched) == {"diffusion_model.single_blocks.0.linear1.weight",
                            "diffusion_model.final_layer.adaLN_modulation.1.weight"}
    a, b = factors["norm_out.linear"]
    torch.testing.assert_close(
        patched["diffusion_model.final_layer.adaLN_modulation.1.weight"],
        base["diffusion_model.final_layer.adaLN_modulation.1.weight"] + cf.swap_scale_shift(b @ a))
    a, b = factors["single_transformer_blocks.0.proj_mlp"]
    w = base["diffusion_model.single_blocks.0.linear1.weight"]
    got = patched["diffusion_model.single_blocks.0.linear1.weight"]
    torch.testing.assert_close(got[96:], w[96:] + b @ a)
    assert torch.equal(got[:96], w[:96])


def test_bfl_names_and_alpha(tiny):
    """kohya/BFL names (lora_unet_..., diffusion_model...., linear1_qkv) patch whole or sliced fused weights."""
    model, cfg = tiny
    base = cf.diffusers_to_bfl(model.state_dict(), **cfg)
    key_map = cf.lora_key_map(list(base), **cfg)
    g = torch.Generator().manual_seed(3)
    qkv_a, qkv_b = torch.randn(4, 32, generator=g), torch.randn(96, 4, generator=g)
    l1_a, l1_b = torch.randn(2, 32, generator=g), torch.randn(96, 2, generator=g)
    mlp_a, mlp_b = torch.randn(4, 32, generator=g), torch.randn(128, 4, generator=g)
    lora = {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": qkv_a,
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": qkv_b,
        "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(8.0),
        "diffusion_model.single_blocks.0.linear1_qkv.lora_A.weight": l1_a,
        "diffusion_model.single_blocks.0.linear1_qkv.lora_B.weight": l1_b,
        "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight": mlp_a,
        "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight": mlp_b,
    }
    patched, not_loaded = cf.apply_lora(base, lora, key_map, strength=0.5)
    assert not_loaded == []
    torch.testing.assert_close(patched["double_blocks.0.img_attn.qkv.weight"],
                               base["double_blocks.0.img_attn.qkv.weight"] + 0.5 * 2.0 * qkv_b @ qkv_a)
    expected = base["single_blocks.0.linear1.weight"].clone()
    expected[:96] += 0.5 * l1_b @ l1_a
    expected[96:] += 0.5 * mlp_b @ mlp_a
    torch.testing.assert_close(patched["single_blocks.0.linear1.weight"], expected)


def test_keys_not_loaded(tiny):
    model, cfg = tiny
    base = cf.diffusers_to_bfl(model.state_dict(), **cfg)
    key_map = cf.lora_key_map(list(base), **cfg)
    z = torch.zeros
    lora = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": z(4, 32),  # no lora_B: never read
        "transformer.transformer_blocks.0.attn.to_q.alpha": torch.tensor(4.0),  # mapped name: counted
        "transformer.transformer_blocks.0.attn.to_k.lora_A.weight": z(4, 32),
        "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": z(32, 4),
        "transformer.transformer_blocks.0.attn.to_k.lora_B.bias": z(32),  # bias of lora_B: not loaded
        "transformer.transformer_blocks.0.attn.to_k.lora_magnitude_vector": z(32),  # peft DoRA name
        "transformer.transformer_blocks.9.attn.to_q.lora_A.weight": z(4, 32),  # no such block
        "transformer.transformer_blocks.9.attn.to_q.lora_B.weight": z(32, 4),
        "unet.transformer_blocks.0.attn.to_v.lora_A.weight": z(4, 32),  # no unet. form for Flux
        # mapped by ComfyUI, but its target is not part of a Flux.1 model: "NOT LOADED"
        "transformer.controlnet_x_embedder.lora_A.weight": z(4, 64),
        "transformer.controlnet_x_embedder.lora_B.weight": z(32, 4),
    }
    _, not_loaded = cf.apply_lora(base, lora, key_map)
    assert not_loaded == [
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
        "transformer.transformer_blocks.0.attn.to_k.lora_B.bias",
        "transformer.transformer_blocks.0.attn.to_k.lora_magnitude_vector",
        "transformer.transformer_blocks.9.attn.to_q.lora_A.weight",
        "transformer.transformer_blocks.9.attn.to_q.lora_B.weight",
        "unet.transformer_blocks.0.attn.to_v.lora_A.weight",
        "transformer.controlnet_x_embedder.lora_B.weight",
        "transformer.controlnet_x_embedder.lora_A.weight",
    ]
    _, loader_not_loaded, _ = cf.load_lora(lora, key_map)
    assert "transformer.controlnet_x_embedder.lora_A.weight" not in loader_not_loaded


def test_shape_mismatch_is_reported(tiny):
    model, cfg = tiny
    base = cf.diffusers_to_bfl(model.state_dict(), **cfg)
    key_map = cf.lora_key_map(list(base), **cfg)
    lora = {"transformer.proj_out.lora_A.weight": torch.ones(4, 31),
            "transformer.proj_out.lora_B.weight": torch.ones(64, 4)}
    patched, not_loaded = cf.apply_lora(base, lora, key_map)
    assert torch.equal(patched["final_layer.linear.weight"], base["final_layer.linear.weight"])
    assert sorted(not_loaded) == sorted(lora)


def test_dora_scale(tiny):
    """dora_scale is loaded and follows ComfyUI's weight_decompose (row norm of the original weight)."""
    model, cfg = tiny
    base = cf.diffusers_to_bfl(model.state_dict(), **cfg)
    key_map = cf.lora_key_map(list(base), **cfg)
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(4, 32, generator=g), torch.randn(32, 4, generator=g)
    m = torch.rand(32, 1, generator=g) + 0.5
    lora = {"transformer.transformer_blocks.0.attn.add_k_proj.lora_A.weight": a,
            "transformer.transformer_blocks.0.attn.add_k_proj.lora_B.weight": b,
            "transformer.transformer_blocks.0.attn.add_k_proj.dora_scale": m}
    patched, not_loaded = cf.apply_lora(base, lora, key_map, strength=0.6)
    assert not_loaded == []
    w0 = base["double_blocks.0.txt_attn.qkv.weight"]
    w = w0[32:64]
    dora = (w + b @ a) * (m / (w.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps))
    got = patched["double_blocks.0.txt_attn.qkv.weight"]
    torch.testing.assert_close(got[32:64], w + 0.6 * (dora - w))
    assert torch.equal(got[:32], w0[:32]) and torch.equal(got[64:], w0[64:])


def test_dtype_roundtrip(tiny):
    model, cfg = tiny
    base = {k: v.to(torch.bfloat16) for k, v in cf.diffusers_to_bfl(model.state_dict(), **cfg).items()}
    key_map = cf.lora_key_map(list(base), **cfg)
    a, b = torch.randn(4, 32), torch.randn(128, 4)
    lora = {"transformer.transformer_blocks.0.ff.net.0.proj.lora_A.weight": a.to(torch.bfloat16),
            "transformer.transformer_blocks.0.ff.net.0.proj.lora_B.weight": b.to(torch.bfloat16)}
    patched, _ = cf.apply_lora(base, lora, key_map)
    got = patched["double_blocks.0.img_mlp.0.weight"]
    assert got.dtype == torch.bfloat16
    exp = (base["double_blocks.0.img_mlp.0.weight"].float()
           + b.to(torch.bfloat16).float() @ a.to(torch.bfloat16).float()).to(torch.bfloat16)
    assert torch.equal(got, exp)


def test_clip_l_keys():
    layers = 33
    modules = list(cf.LORA_CLIP_MAP)
    clip_sd = {f"clip_l.transformer.text_model.encoder.layers.{i}.{m}.weight": torch.randn(8, 8)
               for i in range(layers) for m in modules}
    clip_sd["clip_l.transformer.text_model.embeddings.token_embedding.weight"] = torch.randn(10, 8)
    key_map = cf.lora_key_map([], 0, 0, 0, clip_keys=list(clip_sd))
    q = "clip_l.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight"
    for name in ("text_encoder.text_model.encoder.layers.3.self_attn.q_proj",
                 "lora_te1_text_model_encoder_layers_3_self_attn_q_proj",
                 "lora_te_text_model_encoder_layers_3_self_attn_q_proj",
                 "text_encoders.clip_l.transformer.text_model.encoder.layers.3.self_attn.q_proj"):
        assert key_map[name] == q
    assert "text_encoder.text_model.encoder.layers.32.mlp.fc1" not in key_map  # ComfyUI stops at 32
    assert "text_encoder.text_model.embeddings.token_embedding" not in key_map

    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)
    lora = {"text_encoder.text_model.encoder.layers.3.self_attn.q_proj.lora_A.weight": a,
            "text_encoder.text_model.encoder.layers.3.self_attn.q_proj.lora_B.weight": b,
            "text_encoder.text_model.encoder.layers.32.mlp.fc1.lora_A.weight": a,
            "text_encoder.text_model.encoder.layers.32.mlp.fc1.lora_B.weight": b}
    patched, not_loaded = cf.apply_lora(clip_sd, lora, key_map, strength=2.0)
    torch.testing.assert_close(patched[q], clip_sd[q] + 2.0 * b @ a)
    assert set(patched) == {q}
    assert not_loaded == ["text_encoder.text_model.encoder.layers.32.mlp.fc1.lora_A.weight",
                          "text_encoder.text_model.encoder.layers.32.mlp.fc1.lora_B.weight"]


def test_qk_norm_suffix_follows_model_keys(tiny):
    model, cfg = tiny
    for suffix in ("scale", "weight"):
        base = cf.diffusers_to_bfl(model.state_dict(), **cfg, qk_norm_suffix=suffix)
        assert f"double_blocks.0.img_attn.norm.query_norm.{suffix}" in base
        key_map = cf.lora_key_map(list(base), **cfg)
        assert key_map["transformer.transformer_blocks.0.attn.norm_q"] == \
            f"diffusion_model.double_blocks.0.img_attn.norm.query_norm.{suffix}"


def test_other_adapters_are_refused(tiny):
    model, cfg = tiny
    base = cf.diffusers_to_bfl(model.state_dict(), **cfg)
    key_map = cf.lora_key_map(list(base), **cfg)
    with pytest.raises(NotImplementedError):
        cf.apply_lora(base, {"lycoris_proj_out.lokr_w1": torch.ones(2, 2)}, key_map)


# ------------------------------------------------------------------ the re-implementation on its own


def _synthetic_diffusers_sd(num_layers: int, num_single_layers: int, hidden: int, gen: torch.Generator):
    """A random state dict with the parameter names and shapes of diffusers' FluxTransformer2DModel."""
    h, mlp, in_ch, ctx, pooled = hidden, hidden * 4, 16, 24, 20
    shapes: dict[str, tuple[int, ...]] = {}

    def lin(name, out_f, in_f):
        shapes[name + ".weight"] = (out_f, in_f)
        shapes[name + ".bias"] = (out_f,)

    for emb in ("timestep_embedder", "guidance_embedder"):
        lin(f"time_text_embed.{emb}.linear_1", h, 256)
        lin(f"time_text_embed.{emb}.linear_2", h, h)
    lin("time_text_embed.text_embedder.linear_1", h, pooled)
    lin("time_text_embed.text_embedder.linear_2", h, h)
    lin("context_embedder", h, ctx)
    lin("x_embedder", h, in_ch)
    for i in range(num_layers):
        p = f"transformer_blocks.{i}."
        lin(p + "norm1.linear", 6 * h, h)
        lin(p + "norm1_context.linear", 6 * h, h)
        for m in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            lin(p + "attn." + m, h, h)
        lin(p + "attn.to_out.0", h, h)
        for m in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            shapes[p + f"attn.{m}.weight"] = (4,)
        for ff in ("ff", "ff_context"):
            lin(p + f"{ff}.net.0.proj", mlp, h)
            lin(p + f"{ff}.net.2", h, mlp)
    for i in range(num_single_layers):
        p = f"single_transformer_blocks.{i}."
        lin(p + "norm.linear", 3 * h, h)
        lin(p + "proj_mlp", mlp, h)
        lin(p + "proj_out", h, h + mlp)
        for m in ("to_q", "to_k", "to_v"):
            lin(p + "attn." + m, h, h)
        for m in ("norm_q", "norm_k"):
            shapes[p + f"attn.{m}.weight"] = (4,)
    lin("norm_out.linear", 2 * h, h)
    lin("proj_out", in_ch, h)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_key_map_and_lora_math_on_a_synthetic_flux():
    """The re-implementation on its own, on a random state dict with diffusers' names: the BFL layout holds every
    diffusers tensor where the key map says; a diffusers-form LoRA (CLIP-L too, one DoRA module, one unknown key) and a
    kohya-form LoRA on a fused weight apply the expected change."""
    gen = torch.Generator().manual_seed(0)
    cfg = {"num_layers": 2, "num_single_layers": 2, "hidden_size": 8}
    d_sd = _synthetic_diffusers_sd(cfg["num_layers"], cfg["num_single_layers"], cfg["hidden_size"], gen)
    bfl = cf.diffusers_to_bfl(d_sd, **cfg)
    fmap = cf.flux_to_diffusers(**cfg)
    assert set(d_sd) <= set(fmap), sorted(set(d_sd) - set(fmap))
    # every mapped BFL row range comes from exactly its diffusers tensor
    for dk, t in fmap.items():
        if dk not in d_sd:
            continue
        if isinstance(t, str):
            assert torch.equal(bfl[t], d_sd[dk])
        elif t[1] is not None:
            assert torch.equal(bfl[t[0]].narrow(*t[1]), d_sd[dk])
        else:
            assert torch.equal(bfl[t[0]], t[2](d_sd[dk]))

    clip_keys = [f"clip_l.transformer.text_model.encoder.layers.0.{m}.weight" for m in cf.LORA_CLIP_MAP]
    clip_sd = {k: torch.randn(8, 8, generator=gen) for k in clip_keys}
    key_map = cf.lora_key_map(list(bfl), clip_keys=clip_keys, **cfg)

    rank, strength = 3, 0.8
    lora: dict[str, torch.Tensor] = {}
    expected_d = dict(d_sd)
    for dk in d_sd:
        if not dk.endswith(".weight") or d_sd[dk].dim() != 2:
            continue
        base = dk[: -len(".weight")]
        out_f, in_f = d_sd[dk].shape
        a = torch.randn(rank, in_f, generator=gen)
        b = torch.randn(out_f, rank, generator=gen)
        lora[f"transformer.{base}.lora_A.weight"] = a
        lora[f"transformer.{base}.lora_B.weight"] = b
        expected_d[dk] = d_sd[dk] + strength * (b @ a)
    expected_clip = dict(clip_sd)
    for k in clip_keys:
        module = k[len("clip_l.transformer."): -len(".weight")]
        a = torch.randn(rank, 8, generator=gen)
        b = torch.randn(8, rank, generator=gen)
        lora[f"text_encoder.{module}.lora_A.weight"] = a
        lora[f"text_encoder.{module}.lora_B.weight"] = b
        expected_clip[k] = clip_sd[k] + strength * (b @ a)
    lora["transformer.not_a_module.lora_A.weight"] = torch.zeros(rank, 8)
    lora["transformer.transformer_blocks.0.attn.to_q.dora_scale"] = torch.ones(8, 1)

    patched, not_loaded = cf.apply_lora({**bfl, **clip_sd}, lora, key_map, strength)
    assert not_loaded == ["transformer.not_a_module.lora_A.weight"], not_loaded
    merged = {**bfl, **clip_sd, **patched}
    expected_bfl = cf.diffusers_to_bfl(expected_d, **cfg)
    for k, v in expected_bfl.items():
        if k == "double_blocks.0.img_attn.qkv.weight":
            continue  # DoRA on its q rows, checked below
        torch.testing.assert_close(merged[k], v, rtol=1e-5, atol=1e-5, msg=k)
    for k, v in expected_clip.items():
        torch.testing.assert_close(merged[k], v, rtol=1e-5, atol=1e-5, msg=k)
    qkv = merged["double_blocks.0.img_attn.qkv.weight"]
    torch.testing.assert_close(qkv[8:], expected_bfl["double_blocks.0.img_attn.qkv.weight"][8:])
    w = d_sd["transformer_blocks.0.attn.to_q.weight"]
    w_calc = w + (lora["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
                  @ lora["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"])
    dora = w_calc / (w.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(qkv[:8], w + strength * (dora - w), rtol=1e-5, atol=1e-5)

    # kohya form on the fused weight, with alpha: scale = alpha / rank
    lk = {"lora_unet_single_blocks_1_linear1.lora_down.weight": torch.randn(rank, 8, generator=gen),
          "lora_unet_single_blocks_1_linear1.lora_up.weight": torch.randn(8 * 3 + 32, rank, generator=gen),
          "lora_unet_single_blocks_1_linear1.alpha": torch.tensor(6.0)}
    patched, not_loaded = cf.apply_lora(bfl, lk, key_map)
    assert not not_loaded
    exp = bfl["single_blocks.1.linear1.weight"] + (6.0 / rank) * (
        lk["lora_unet_single_blocks_1_linear1.lora_up.weight"] @ lk["lora_unet_single_blocks_1_linear1.lora_down.weight"])
    torch.testing.assert_close(patched["single_blocks.1.linear1.weight"], exp)
