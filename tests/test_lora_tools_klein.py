"""LoRA tools on FLUX.2 klein LoRAs: our files and the forms peers write (musubi-tuner's kohya keys with alpha,
ai-toolkit's diffusion_model.<BFL> keys without), checked, converted, resized and merged, each checked against
diffusers applying the same change; merging into the BFL transformer file equals the merged transformer."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.lora.tools import check_lora, convert_lora, inspect_lora, merge_into_base, merge_loras, resize_lora
from test_klein import klein_config, transformer_inputs, transformer_out
from tiny_klein import klein_to_bfl, make_klein_single_files, make_tiny_klein
from train_helpers import CaptureLogs, train_in_process


@pytest.fixture(scope="module")
def klein(tmp_path_factory):
    from tiny_models import make_tiny_dataset

    root = tmp_path_factory.mktemp("klein_tools")
    data = make_tiny_dataset(root / "data")
    model = make_tiny_klein("base")
    files = []
    for name, seed in (("k1", 7), ("k2", 11)):
        train_in_process(klein_config(model, data, root / name, max_train_steps=3, seed=seed, learning_rate=5e-2))
        files.append(root / name / "lora.safetensors")
    return model, files


def _pipe(model):
    from diffusers import Flux2KleinPipeline

    return Flux2KleinPipeline.from_pretrained(model, dtype=torch.float32, local_files_only=True)


def _applied(model, loras: list[tuple[object, float]]) -> torch.Tensor:
    """diffusers' own loading: each LoRA fused at its strength, the transformer's output on fixed inputs."""
    pipe = _pipe(model)
    for path, weight in loras:
        with CaptureLogs() as logs:
            pipe.load_lora_weights(str(path))
        assert logs.key_problems(text_encoder_trained=False) == []
        pipe.fuse_lora(components=["transformer"], lora_scale=weight)
        pipe.unload_lora_weights()
    return transformer_out(pipe.transformer, transformer_inputs(pipe.transformer))


def test_klein_inspect_check_merge_resize(klein, tmp_path):
    model, (k1, k2) = klein
    info = inspect_lora(k1)
    assert info["family"] == "flux2_klein" and info["format"] == "diffusers"
    fit = check_lora(k1, str(model))
    assert fit["ok"] and fit["mapped"] == 14
    both = tmp_path / "both.safetensors"
    merge_loras([f"{k1}:1.0", f"{k2}:0.5"], both)
    assert (_applied(model, [(both, 1.0)]) - _applied(model, [(k1, 1.0), (k2, 0.5)])).abs().max() < 1e-4
    small = tmp_path / "small.safetensors"
    resize_lora(k1, small, rank=4)  # the trained rank: exact
    assert (_applied(model, [(small, 1.0)]) - _applied(model, [(k1, 1.0)])).abs().max() < 1e-4


def _musubi_to_ai_toolkit(kohya: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """sd-scripts / musubi-tuner keys (lora_unet_double_blocks_0_img_attn_qkv.lora_down/up + alpha) as ai-toolkit
    writes klein LoRAs: diffusion_model.double_blocks.0.img_attn.qkv.lora_A/B, alpha / rank folded into B."""
    out = {}
    for key, t in kohya.items():
        if not key.endswith(".lora_down.weight"):
            continue
        module = key[: -len(".lora_down.weight")]
        up = kohya[f"{module}.lora_up.weight"]
        scale = float(kohya[f"{module}.alpha"]) / t.shape[0]
        bfl = re.sub(r"^lora_unet_(double|single)_blocks_(\d+)_", r"\1_blocks.\2.", module)
        bfl = bfl.replace("img_attn_", "img_attn.").replace("txt_attn_", "txt_attn.").replace("img_mlp_", "img_mlp.")
        bfl = bfl.replace("txt_mlp_", "txt_mlp.")
        out[f"diffusion_model.{bfl}.lora_A.weight"] = t
        out[f"diffusion_model.{bfl}.lora_B.weight"] = up * scale
    return out


def test_peer_forms_musubi_and_ai_toolkit_read_and_convert_to_the_same_change(klein, tmp_path):
    model, (k1, _) = klein
    musubi = tmp_path / "musubi.safetensors"
    convert_lora(k1, "kohya", musubi, base=str(model))
    keys = load_file(musubi)
    assert "lora_unet_double_blocks_0_img_attn_qkv.alpha" in keys and "lora_unet_single_blocks_0_linear1.alpha" in keys
    aitk = tmp_path / "aitk.safetensors"
    save_file(_musubi_to_ai_toolkit(keys), str(aitk))
    want = _applied(model, [(k1, 1.0)])
    for peer in (musubi, aitk):
        assert inspect_lora(peer)["family"] == "flux2_klein", peer.name
        fit = check_lora(peer, str(model))
        assert fit["ok"] and fit["mapped"] == 10, (peer.name, fit)
        back = tmp_path / f"{peer.stem}-diffusers.safetensors"
        convert_lora(peer, "diffusers", back, base=str(model))
        assert (_applied(model, [(back, 1.0)]) - want).abs().max() < 1e-4, peer.name


def test_merge_into_the_klein_bfl_file_equals_the_merged_transformer(klein, tmp_path):
    """The single files hold the same random weights as the tiny folder (bf16 in the file): merging the LoRA into the
    BFL file gives, key for key, the BFL form of the transformer with the LoRA fused."""
    model, (k1, _) = klein
    files = make_klein_single_files()
    out = tmp_path / "merged.safetensors"
    s = merge_into_base(str(files / "flux-2-klein-base-4b.safetensors"), [f"{k1}:20"], out,
                        config_dir=str(files / "config"))
    assert s.applied == 14 and "FLUX.2 klein, BFL layout" in s.lines()[0]
    pipe = _pipe(model)
    pipe.transformer.to(torch.bfloat16).to(torch.float32)  # as stored in the file
    base = klein_to_bfl(pipe.transformer.state_dict())
    pipe.load_lora_weights(str(k1))
    pipe.fuse_lora(components=["transformer"], lora_scale=20.0)  # a large strength: changes well above bf16's step
    pipe.unload_lora_weights()
    want = klein_to_bfl(pipe.transformer.state_dict())
    got = load_file(out)
    assert set(got) == set(want)
    changed = 0
    for k, w in want.items():
        assert got[k].dtype == torch.bfloat16
        tol = 1e-2 * max(w.abs().max().item(), 1e-3)  # one bf16 rounding
        assert (got[k].float() - w).abs().max() <= tol, k
        changed += bool((w - base[k]).abs().max() > 4 * tol)
    assert changed >= 10
