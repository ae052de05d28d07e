"""diffusers -> LDM/sgm single-file export, checked against diffusers' own single-file loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.models.ldm_convert import (
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    pipeline_to_ldm_state_dict,
    save_single_file,
    unet_module_to_ldm,
    unet_to_ldm_state_dict,
    vae_to_ldm_state_dict,
)

CONFIGS = Path(__file__).resolve().parent.parent / "core" / "models" / "configs"


# ----------------------------------------------------------------------------- module names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
        ("down_blocks.0.attentions.1.proj_in", "input_blocks.2.1.proj_in"),
        ("down_blocks.2.attentions.1.transformer_blocks.9.ff.net.0.proj", "input_blocks.8.1.transformer_blocks.9.ff.net.0.proj"),
        ("down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("down_blocks.3.resnets.1.time_emb_proj", "input_blocks.11.0.emb_layers.1"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("down_blocks.2.downsamplers.0.conv", "input_blocks.9.0.op"),
        ("mid_block.resnets.0.norm2", "middle_block.0.out_layers.0"),
        ("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", "middle_block.1.transformer_blocks.0.attn2.to_out.0"),
        ("mid_block.resnets.1.conv2", "middle_block.2.out_layers.3"),
        ("up_blocks.0.resnets.2.norm1", "output_blocks.2.0.in_layers.0"),
        ("up_blocks.1.attentions.2.proj_out", "output_blocks.5.1.proj_out"),
        ("up_blocks.3.resnets.2.conv_shortcut", "output_blocks.11.0.skip_connection"),
        ("time_embedding.linear_1", "time_embed.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
        # parameter names work too (the suffix is carried over)
        ("down_blocks.0.resnets.1.norm1.weight", "input_blocks.2.0.in_layers.0.weight"),
        ("down_blocks.1.attentions.0", "input_blocks.4.1"),
    ],
)
def test_unet_module_to_ldm(name, expected):
    assert unet_module_to_ldm(name) == expected


def test_upsampler_position_depends_on_family():
    # SD1.5: up block 0 has no attention -> upsampler right after the resnet.
    assert unet_module_to_ldm("up_blocks.0.upsamplers.0.conv", "sd15") == "output_blocks.2.1.conv"
    assert unet_module_to_ldm("up_blocks.1.upsamplers.0.conv", "sd15") == "output_blocks.5.2.conv"
    # SDXL: up blocks 0 and 1 both hold attentions.
    assert unet_module_to_ldm("up_blocks.0.upsamplers.0.conv", "sdxl") == "output_blocks.2.2.conv"
    assert unet_module_to_ldm("up_blocks.1.upsamplers.0.conv", "sdxl") == "output_blocks.5.2.conv"
    with pytest.raises(ValueError, match="family"):
        unet_module_to_ldm("up_blocks.0.upsamplers.0.conv")


@pytest.mark.parametrize("name", ["down_blocks.1", "text_model.encoder.layers.0", "up_blocks.0.foo", ""])
def test_unet_module_to_ldm_rejects_unknown(name):
    with pytest.raises(ValueError):
        unet_module_to_ldm(name)


# ----------------------------------------------------------------------------- tiny round trip


def _config_only_copy(model_dir: Path, dest: Path) -> Path:
    """The pipeline folder without weights: proves from_single_file reads weights only from the file."""
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return dest


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, name: str):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{name}: key sets differ: {sorted(set(sa) ^ set(sb))[:5]}"
    different = [k for k in sa if sa[k].dtype != sb[k].dtype or not torch.equal(sa[k], sb[k])]
    assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:5]}"


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_single_file_round_trip(family, tiny_sd15, tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls, model_dir = {
        "sd15": (StableDiffusionPipeline, tiny_sd15),
        "sdxl": (StableDiffusionXLPipeline, tiny_sdxl),
    }[family]
    pipe = cls.from_pretrained(model_dir)
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])

    state = pipeline_to_ldm_state_dict(
        family, pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)
    )
    path = save_single_file(tmp_path / f"{family}.safetensors", state)
    assert path.is_file() and not path.with_name(path.name + ".tmp").exists()

    config_dir = _config_only_copy(model_dir, tmp_path / "config")
    loaded = cls.from_single_file(str(path), config=str(config_dir), local_files_only=True)

    assert type(loaded) is cls
    for name in names:
        _assert_same_weights(getattr(pipe, name), getattr(loaded, name), name)
    assert loaded.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_sdxl_text_encoder_2_uses_open_clip_layout(tiny_sdxl):
    from transformers import CLIPTextModelWithProjection

    te2 = CLIPTextModelWithProjection.from_pretrained(tiny_sdxl, subfolder="text_encoder_2")
    from core.models.ldm_convert import open_clip_to_ldm_state_dict

    sd = open_clip_to_ldm_state_dict(te2)
    hidden, proj = te2.config.hidden_size, te2.config.projection_dim
    assert sd[SDXL_TE2_PREFIX + "text_projection"].shape == (hidden, proj)
    assert torch.equal(sd[SDXL_TE2_PREFIX + "text_projection"], te2.text_projection.weight.T)
    fused = sd[SDXL_TE2_PREFIX + "transformer.resblocks.1.attn.in_proj_weight"]
    attn = te2.text_model.encoder.layers[1].self_attn
    assert fused.shape == (3 * hidden, hidden)
    assert torch.equal(fused[hidden : 2 * hidden], attn.k_proj.weight)
    assert not any("q_proj" in k or "position_ids" in k for k in sd)


def test_save_single_file_writes_metadata_and_handles_shared_tensors(tmp_path):
    from safetensors import safe_open

    t = torch.arange(6, dtype=torch.float32)
    path = save_single_file(tmp_path / "x.safetensors", {"a": t, "b": t, "c": t.view(2, 3)}, {"note": "hi"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt", "note": "hi"}
        assert torch.equal(f.get_tensor("c"), t.view(2, 3))
        assert torch.equal(f.get_tensor("b"), t)


# ----------------------------------------------------------------------------- real-size layouts (meta device)


def _meta_models(family):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / family
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        te2 = None
        if family == "sdxl":
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    return unet, vae, te, te2


# Names and shapes as they appear in the original released checkpoints.
REAL_KEYS = {
    "sd15": {
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.time_embed.2.weight": (1280, 1280),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.encoder.norm_out.weight": (512,),
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
    },
    "sdxl": {
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
        "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280),
        "conditioner.embedders.1.model.ln_final.bias": (1280,),
    },
}
# Total tensor count of the released files' model weights (no EMA, no position_ids, no logit_scale).
REAL_COUNTS = {"sd15": 686 + 248 + 196, "sdxl": 1680 + 248 + 196 + 389}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_real_size_layout_matches_original_and_diffusers_loader(family):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    unet, vae, te, te2 = _meta_models(family)
    state = pipeline_to_ldm_state_dict(family, unet, vae, te, te2)

    for key, shape in REAL_KEYS[family].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert len(state) == REAL_COUNTS[family]

    # diffusers' own LDM -> diffusers converters give back exactly the model's keys and shapes.
    back = convert_ldm_unet_checkpoint(state, dict(unet.config))
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    back = convert_ldm_vae_checkpoint(state, dict(vae.config))
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    back = convert_ldm_clip_checkpoint(state)
    assert {k.removeprefix("text_model.") for k in back} == set(te.state_dict())
    if te2 is not None:
        back = convert_open_clip_checkpoint(te2, state, prefix=SDXL_TE2_PREFIX)
        expected = {k: tuple(v.shape) for k, v in te2.state_dict().items() if "position_ids" not in k}
        assert {k: tuple(v.shape) for k, v in back.items()} == expected


def test_unet_state_dict_uses_module_mapping(tiny_sdxl):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl, subfolder="unet")
    state = unet_to_ldm_state_dict(unet.state_dict(), unet.config)
    for key in unet.state_dict():
        module, _, leaf = key.rpartition(".")
        assert f"{UNET_PREFIX}{unet_module_to_ldm(module, 'sdxl')}.{leaf}" in state


def test_vae_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unexpected VAE key"):
        vae_to_ldm_state_dict({"encoder.something_new.weight": torch.zeros(1)}, {"up_block_types": ["a"]})


def test_unsupported_family():
    with pytest.raises(ValueError, match="unsupported family"):
        pipeline_to_ldm_state_dict("flux", None, None, None)


# ----------------------------------------------------------------------------- shipped configs + tokenizers


@pytest.mark.parametrize("folder, pad_id", [("clip_tokenizer", 49407), ("clip_tokenizer_2", 0)])
def test_shipped_clip_tokenizers(folder, pad_id):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(CONFIGS / folder)
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # "!</w>" is 256; tokenizer_2 (pad "!") turns a bare "!" into the pad token 0 instead, exactly as
    # the released SDXL/SD2 tokenizers do with transformers (huggingface/diffusers#4153).
    exclamation = 256 if pad_id != 0 else 0
    assert tok("An astronaut riding a horse on Mars!").input_ids == [
        49406, 550, 18376, 6765, 320, 4558, 525, 7496, exclamation, 49407
    ]
    assert tok.pad_token_id == pad_id
    ids = tok("a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[3:5] == [49407, pad_id]


def test_shipped_tokenizer_files_are_reproducible():
    """Re-running the build from the merges reproduces every shipped byte."""
    from core.models.build_clip_tokenizer import build_vocab_and_merges, tokenizer_files

    merges_txt = (CONFIGS / "clip_tokenizer" / "merges.txt").read_text(encoding="utf-8")
    # The original BPE file starts with one header line, then the merges, like merges.txt.
    vocab, merges = build_vocab_and_merges(merges_txt)
    assert len(merges) == 48894 and vocab["a</w>"] == 320 and vocab["<|endoftext|>"] == 49407
    for folder, pad in (("clip_tokenizer", "<|endoftext|>"), ("clip_tokenizer_2", "!")):
        for name, data in tokenizer_files(vocab, merges, pad).items():
            assert (CONFIGS / folder / name).read_bytes() == data, f"{folder}/{name}"


# Parameter counts of the released models (unet, vae, text encoders).
RELEASED_PARAMS = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_shipped_configs_build_the_released_architectures(family):
    unet, vae, te, te2 = _meta_models(family)
    models = {"unet": unet, "vae": vae, "text_encoder": te, "text_encoder_2": te2}
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items() if m is not None}
    assert counts == RELEASED_PARAMS[family]
    index = json.loads((CONFIGS / family / "model_index.json").read_text())
    assert index["_class_name"] == {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[family]


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd2v"])
def test_shipped_family_folder_is_a_complete_single_file_config(family):
    """Every component named in model_index.json has its config (and tokenizers are the shipped ones)."""
    folder = CONFIGS / family
    index = json.loads((folder / "model_index.json").read_text())
    canonical = {"sd15": {"tokenizer": "clip_tokenizer"},
                 "sdxl": {"tokenizer": "clip_tokenizer", "tokenizer_2": "clip_tokenizer_2"},
                 "sd2v": {"tokenizer": "clip_tokenizer_2"}}[family]
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if name.startswith("tokenizer"):
            for file in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
                assert (folder / name / file).read_bytes() == (CONFIGS / canonical[name] / file).read_bytes()
        elif name == "scheduler":
            assert (folder / name / "scheduler_config.json").is_file()
        else:
            assert (folder / name / "config.json").is_file(), name
    assert set(canonical) == {n for n in index if n.startswith("tokenizer")}
