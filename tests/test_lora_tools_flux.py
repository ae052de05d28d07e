"""LoRA tools on Flux LoRAs (diffusers keys): inspect, check, an exact merge and resize checked with diffusers."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from core.lora.tools import ToolError, check_lora, convert_lora, inspect_lora, merge_loras, resize_lora
from test_flux import clip_pooled, flux_config, transformer_inputs, transformer_out
from tiny_flux import make_tiny_flux
from train_helpers import CaptureLogs, train_in_process


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    from tiny_models import make_tiny_dataset

    root = tmp_path_factory.mktemp("flux_tools")
    data = make_tiny_dataset(root / "data")
    model = make_tiny_flux("dev")
    files = []
    for name, seed in (("f1", 7), ("f2", 11)):
        cfg = flux_config(model, data, root / name, max_train_steps=3, seed=seed, network_train_unet_only=False)
        train_in_process(cfg)
        files.append(root / name / "lora.safetensors")
    return model, files


def _outputs(model, loras: list[tuple[str, float]]):
    """diffusers' own loading: each LoRA fused at its strength (named adapters skip CLIP-L in this diffusers)."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(model, dtype=torch.float32)
    for path, weight in loras:
        with CaptureLogs() as logs:
            pipe.load_lora_weights(str(path))
        assert logs.key_problems(text_encoder_trained=True) == []
        pipe.fuse_lora(components=["transformer", "text_encoder"], lora_scale=weight)
        pipe.unload_lora_weights()
    tr = pipe.transformer
    return transformer_out(tr, transformer_inputs(tr)), clip_pooled(pipe.text_encoder, pipe.tokenizer)


def test_flux_inspect_check_merge_resize(flux, tiny_sd15, tmp_path):
    model, (f1, f2) = flux
    info = inspect_lora(f1)
    assert (info["family"], info["format"], info["rank"]) == ("flux", "diffusers", 4)
    assert set(info["parts"]) == {"transformer", "text_encoder"}
    ok = check_lora(f1, str(model))
    assert ok["ok"] and ok["mapped"] == info["modules"]
    bad = check_lora(f1, str(tiny_sd15))
    assert not bad["ok"] and "a Flux.1 LoRA; the base model is SD1.5" in bad["message"]

    merged = tmp_path / "merged.safetensors"
    s = merge_loras([(f1, 0.6), (f2, 0.3)], merged, base=str(model))
    assert s.written == info["modules"]
    assert all(k.startswith(("transformer.", "text_encoder.")) for k in load_file(merged))
    want = _outputs(model, [(f1, 0.6), (f2, 0.3)])
    got = _outputs(model, [(merged, 1.0)])
    base = _outputs(model, [])
    assert (want[0] - base[0]).abs().max() > 1e-4 and (want[1] - base[1]).abs().max() > 1e-6
    for g, w in zip(got, want):
        assert float((g - w).abs().max() / w.abs().max()) < 1e-4

    same = tmp_path / "same.safetensors"
    resize_lora(f1, same, rank=4, base=str(model))
    for g, w in zip(_outputs(model, [(same, 1.0)]), _outputs(model, [(f1, 1.0)])):
        assert float((g - w).abs().max() / w.abs().max()) < 1e-4


def test_merge_into_a_flux_bfl_file_adds_each_change_to_its_rows(tmp_path):
    """The merged BFL file, read by diffusers' own single-file converter, equals the base plus each module's change
    in diffusers layout (q/k/v and proj_mlp are slices of the fused BFL weights)."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from core.lora.tools import merge_into_base
    from tiny_flux import make_flux_single_files

    files = make_flux_single_files("dev")
    base = files / "flux1-dev.safetensors"
    cfg = files / "config"

    def load(path):
        return FluxTransformer2DModel.from_single_file(str(path), config=str(cfg), subfolder="transformer",
                                                       dtype=torch.float32)

    ref = load(base)
    g = torch.Generator().manual_seed(0)
    lora, want = {}, {}
    modules = ["transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.add_v_proj", "transformer_blocks.0.ff.net.0.proj",
               "transformer_blocks.0.norm1.linear", "single_transformer_blocks.0.attn.to_q",
               "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_out"]
    for name in modules:
        w = ref.get_submodule(name).weight
        down = torch.randn(2, w.shape[1], generator=g) * 0.01
        up = torch.randn(w.shape[0], 2, generator=g) * 0.01
        lora[f"transformer.{name}.lora_A.weight"] = down
        lora[f"transformer.{name}.lora_B.weight"] = up
        want[name] = w.detach() + 0.8 * (up @ down)
    clip = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    lora[f"{clip}.lora_A.weight"] = torch.randn(2, 32, generator=g)
    lora[f"{clip}.lora_B.weight"] = torch.randn(32, 2, generator=g)
    path = tmp_path / "flux_lora.safetensors"
    save_file(lora, str(path), metadata={"ss_base_model_version": "flux1"})
    out = tmp_path / "merged.safetensors"
    with pytest.raises(ToolError, match="--clip-l"):
        merge_into_base(str(base), [(str(path), 0.8)], out, config_dir=str(cfg))
    s = merge_into_base(str(base), [(str(path), 0.8)], out, config_dir=str(cfg), clip_l=str(files / "clip_l.safetensors"),
                        save_precision="float")
    assert s.applied == len(modules) + 1
    merged = load(out)
    for name, w in want.items():
        assert torch.allclose(merged.get_submodule(name).weight, w, atol=1e-6), name
    untouched = "transformer_blocks.0.attn.to_q"
    assert torch.equal(merged.get_submodule(untouched).weight, ref.get_submodule(untouched).weight)
    clip_sd = load_file(tmp_path / "merged_clip_l.safetensors")
    orig = load_file(files / "clip_l.safetensors")
    key = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(clip_sd[key], orig[key] + 0.8 * lora[f"{clip}.lora_B.weight"] @ lora[f"{clip}.lora_A.weight"],
                          atol=1e-5)


# ------------------------------------------------------------------------------------------------ sd-scripts form


def _comfy_apply(lora_path, strength=1.0):
    """The tiny dev model's BFL weights (+ CLIP-L) with a LoRA file applied as ComfyUI applies it; the keys it did
    not load."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    import comfy_flux as cf

    model = make_tiny_flux("dev")
    tr = FluxTransformer2DModel.from_pretrained(model, subfolder="transformer", dtype=torch.float32)
    cfg = cf.bfl_to_diffusers_keys_for_model(tr)
    bfl = {f"diffusion_model.{k}": v for k, v in cf.diffusers_to_bfl(tr.state_dict(), **cfg).items()}
    te = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=torch.float32)
    clip = {f"clip_l.transformer.text_model.{k}": v for k, v in te.state_dict().items()}
    sd = {**bfl, **clip}
    key_map = cf.lora_key_map(list(bfl), clip_keys=list(clip), **cfg)
    patched, not_loaded = cf.apply_lora(sd, load_file(lora_path), key_map, strength)
    return {**sd, **patched}, not_loaded, cfg


def _sd_scripts_lora(path, gen, hidden=32, rank=4):
    """A LoRA as sd-scripts trains Flux: fused q/k/v and linear1 (dense ups), modulation, final layer, CLIP-L
    under lora_te1_, alphas != rank."""
    from safetensors.torch import save_file

    shapes = {"double_blocks_0_img_attn_qkv": (3 * hidden, hidden), "double_blocks_0_txt_attn_qkv": (3 * hidden, hidden),
              "double_blocks_0_img_attn_proj": (hidden, hidden), "double_blocks_0_txt_mlp_0": (4 * hidden, hidden),
              "double_blocks_0_img_mod_lin": (6 * hidden, hidden), "single_blocks_0_linear1": (7 * hidden, hidden),
              "single_blocks_0_linear2": (hidden, 5 * hidden), "single_blocks_0_modulation_lin": (3 * hidden, hidden),
              "final_layer_adaLN_modulation_1": (2 * hidden, hidden), "img_in": (hidden, 64)}
    sd = {}
    for name, (out_f, in_f) in shapes.items():
        sd[f"lora_unet_{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen) * 0.1
        sd[f"lora_unet_{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen) * 0.1
        sd[f"lora_unet_{name}.alpha"] = torch.tensor(2.0)
    te = "lora_te1_text_model_encoder_layers_1_self_attn_k_proj"
    sd[f"{te}.lora_down.weight"] = torch.randn(rank, 32, generator=gen) * 0.1
    sd[f"{te}.lora_up.weight"] = torch.randn(32, rank, generator=gen) * 0.1
    sd[f"{te}.alpha"] = torch.tensor(8.0)
    save_file(sd, str(path), metadata={"ss_base_model_version": "flux1", "ss_network_module": "networks.lora_flux"})
    return len(shapes) + 1


def _same_weights(a, b, keys=None):
    keys = keys or a.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)


def test_sd_scripts_flux_lora_is_read_converted_resized_and_merged_as_comfyui_applies_it(tmp_path):
    """An sd-scripts (fused BFL names) Flux LoRA: inspect/check count its modules; convert to diffusers and back,
    resize at full rank and merge into the BFL file all give the change ComfyUI applies for the original."""
    from core.lora.tools import merge_into_base
    from tiny_flux import make_flux_single_files

    src = tmp_path / "sds.safetensors"
    n = _sd_scripts_lora(src, torch.Generator().manual_seed(3))
    info = inspect_lora(src)
    assert (info["family"], info["format"], info["modules"]) == ("flux", "kohya", n)
    assert info["parts"] == {"transformer": n - 1, "text_encoder": 1} and not info["unmapped"], info
    model = make_tiny_flux("dev")
    ok = check_lora(src, str(model))
    assert ok["ok"] and ok["mapped"] == n, ok["message"]
    want, not_loaded, _ = _comfy_apply(src)
    assert not_loaded == []

    diff = tmp_path / "diffusers.safetensors"
    s = convert_lora(src, "diffusers", diff, base=str(model))
    keys = load_file(diff)
    assert all(k.startswith(("transformer.", "text_encoder.")) for k in keys)
    assert "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight" in keys
    assert "transformer.norm_out.linear.lora_B.weight" in keys and s.written > n
    back = tmp_path / "back.safetensors"
    convert_lora(diff, "kohya", back, base=str(model))
    assert set(k.split(".")[0] for k in load_file(back)) == set(k.split(".")[0] for k in load_file(src))
    sized = tmp_path / "sized.safetensors"
    resize_lora(src, sized, rank=4, base=str(model))
    assert set(load_file(sized)) == set(load_file(src))
    for path in (diff, back, sized):
        got, not_loaded, _ = _comfy_apply(path)
        assert not_loaded == [], path.name
        assert _same_weights(got, want) < 1e-5, path.name
    # the round trip through diffusers names keeps each fused module at its rank (the ups are dense: down shared)
    rt = load_file(back)
    assert rt["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape[0] == 4

    # merged into the BFL file (full width: diffusers' single-file converter needs it): the same weights ComfyUI
    # gets by applying the LoRA at that strength
    files = make_flux_single_files("dev")
    wide = tmp_path / "sds_wide.safetensors"
    _sd_scripts_lora(wide, torch.Generator().manual_seed(4), hidden=3072)
    out = tmp_path / "merged.safetensors"
    merge_into_base(str(files / "flux1-dev.safetensors"), [(str(wide), 0.7)], out, config_dir=str(files / "config"),
                    clip_l=str(files / "clip_l.safetensors"), save_precision="float")
    import comfy_flux as cf

    base = load_file(files / "flux1-dev.safetensors")
    prefix = "model.diffusion_model." if any(k.startswith("model.diffusion_model.") for k in base) else ""
    bfl = {f"diffusion_model.{k[len(prefix):]}": v.float() for k, v in base.items() if k.startswith(prefix)}
    cfg = dict(num_layers=1, num_single_layers=1, hidden_size=3072)
    patched, not_loaded = cf.apply_lora(bfl, load_file(wide), cf.lora_key_map(list(bfl), **cfg), 0.7)
    assert [k for k in not_loaded if not k.startswith("lora_te1_")] == []
    merged = load_file(out)
    assert len(patched) == n - 1
    for k, v in patched.items():
        assert torch.allclose(merged[prefix + k[len("diffusion_model."):]].float(), v.float(), atol=1e-6), k


def test_flux_lora_converted_to_kohya_applies_the_trained_change_in_comfyui(flux, tmp_path):
    """Our diffusers-form Flux LoRA, converted to sd-scripts' fused form: ComfyUI applies the same change, and the
    fused q/k/v keep the trained rank per part (block-diagonal ups)."""
    model, (f1, _) = flux
    k = tmp_path / "k.safetensors"
    s = convert_lora(f1, "kohya", k, base=str(model))
    keys = load_file(k)
    assert any(x.startswith("lora_unet_double_blocks_0_img_attn_qkv.") for x in keys)
    assert any(x.startswith("lora_te1_text_model_encoder_layers_") for x in keys)
    assert "fused" in s.lines()[0]
    want, nl1, _ = _comfy_apply(f1)
    got, nl2, _ = _comfy_apply(k)
    assert nl1 == [] and nl2 == []
    assert _same_weights(got, want) < 1e-5
    again = tmp_path / "again.safetensors"
    convert_lora(k, "diffusers", again, base=str(model))
    a, b = load_file(again), load_file(f1)
    assert set(a) == set(b)
    for name in b:  # block-diagonal ups split back to the trained rank, values equal up to the folded scale
        assert a[name].shape == b[name].shape, name


def test_extract_from_two_flux_folders_reproduces_the_tuned_layers(tmp_path):
    """tuned = base + a rank-2 change on two block layers and a change on the time embedding. Flux loads in bf16
    (as a real 12B model must), so the LoRA is the exact rank-2 SVD of the bf16 difference, which is the change up
    to bf16 rounding; diffusers loads it without a key problem; the time embedding is listed as skipped."""
    import shutil

    from diffusers import FluxPipeline, FluxTransformer2DModel

    from core.lora.tools import extract_lora

    base = make_tiny_flux("dev")
    tuned = tmp_path / "tuned"
    shutil.copytree(base, tuned)
    tr = FluxTransformer2DModel.from_pretrained(base, subfolder="transformer", dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    changed = ["transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.proj_mlp"]
    before = {n: tr.get_submodule(n).weight.detach().clone() for n in changed}
    with torch.no_grad():
        for name in changed:
            w = tr.get_submodule(name).weight
            w += (torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w.shape[1], generator=g)) * 0.05
        tr.time_text_embed.timestep_embedder.linear_1.weight += 0.01
    shutil.rmtree(tuned / "transformer")
    tr.save_pretrained(tuned / "transformer")
    out = tmp_path / "extracted.safetensors"
    s = extract_lora(str(base), str(tuned), out, rank=2, clamp=1.0, save_precision="float")
    assert s.written == len(changed)
    assert any("timestep_embedder.linear_1" in name and "double/single blocks" in why for name, why in s.skipped)
    lora = load_file(out)
    assert set(k.rsplit(".lora_", 1)[0] for k in lora) == {f"transformer.{n}" for n in changed}
    for name in changed:
        got = lora[f"transformer.{name}.lora_B.weight"] @ lora[f"transformer.{name}.lora_A.weight"]
        diff = tr.get_submodule(name).weight.detach().bfloat16().float() - before[name].bfloat16().float()
        u, sv, vh = torch.linalg.svd(diff, full_matrices=False)
        assert torch.allclose(got, (u[:, :2] * sv[:2]) @ vh[:2], atol=1e-5), name
        true = tr.get_submodule(name).weight.detach() - before[name]
        assert float((got - true).abs().max()) < 0.02 * float(true.abs().max()), name
    pipe = FluxPipeline.from_pretrained(base, dtype=torch.float32)
    with CaptureLogs() as logs:
        pipe.load_lora_weights(str(out))
    assert logs.key_problems(text_encoder_trained=False) == []
