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
    assert not bad["ok"] and "a Flux.1 LoRA; the base model is Stable Diffusion 1.5" in bad["message"]

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
    with pytest.raises(ToolError, match="diffusers form"):
        convert_lora(f1, "kohya", tmp_path / "k.safetensors")


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
