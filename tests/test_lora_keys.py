"""Every key we write is one that ComfyUI's and AUTOMATIC1111's LoRA loaders map to a real layer.

The mapping rules below are those of the two loaders (ComfyUI `comfy/lora.py` model_lora_keys_unet /
model_lora_keys_clip, AUTOMATIC1111 `extensions-builtin/Lora/networks.py`
convert_diffusers_name_to_compvis + network_layer_mapping), applied to the layer names of the same
model as an original (LDM/sgm) single-file checkpoint, which is what both programs load.
"""
from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from core.models.ldm_convert import pipeline_to_ldm_state_dict
from train_helpers import tiny_config, train_in_process

SUFFIX_CONVERSION = {
    "attentions": {},
    "resnets": {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
                "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"},
}


def a1111_convert(key: str, family: str) -> str:
    """AUTOMATIC1111's convert_diffusers_name_to_compvis, for the key forms we write."""
    def match(pattern):
        m = re.match(pattern, key)
        return None if m is None else [int(g) if re.fullmatch(r"\d+", g) else g for g in m.groups()]

    if m := match(r"lora_unet_conv_in(.*)"):
        return f"diffusion_model_input_blocks_0_0{m[0]}"
    if m := match(r"lora_unet_conv_out(.*)"):
        return f"diffusion_model_out_2{m[0]}"
    if m := match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)"):
        suffix = SUFFIX_CONVERSION.get(m[1], {}).get(m[3], m[3])
        return f"diffusion_model_input_blocks_{1 + m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if m := match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)"):
        suffix = SUFFIX_CONVERSION.get(m[0], {}).get(m[2], m[2])
        return f"diffusion_model_middle_block_{1 if m[0] == 'attentions' else m[1] * 2}_{suffix}"
    if m := match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)"):
        suffix = SUFFIX_CONVERSION.get(m[1], {}).get(m[3], m[3])
        return f"diffusion_model_output_blocks_{m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if m := match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv"):
        return f"diffusion_model_input_blocks_{3 + m[0] * 3}_0_op"
    if m := match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv"):
        return f"diffusion_model_output_blocks_{2 + m[0] * 3}_{2 if m[0] > 0 else 1}_conv"
    if m := match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)"):
        return f"transformer_text_model_encoder_layers_{m[0]}_{m[1]}"
    if m := match(r"lora_te1_text_model_encoder_layers_(\d+)_(.+)"):
        return f"0_transformer_text_model_encoder_layers_{m[0]}_{m[1]}"
    if m := match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)"):
        rest = m[1].replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj").replace("self_attn", "attn")
        return f"1_model_transformer_resblocks_{m[0]}_{rest}"
    return key


def a1111_layer_names(ldm: dict[str, torch.Tensor], family: str) -> set[str]:
    """network_layer_mapping: module names of the loaded LDM model, '.' -> '_'."""
    names = set()
    for k in ldm:
        module = k.rsplit(".", 1)[0]
        if module.startswith("model.diffusion_model."):
            names.add(module[len("model."):].replace(".", "_"))
        elif module.startswith("cond_stage_model."):
            names.add(module[len("cond_stage_model."):].replace(".", "_"))
        elif m := re.match(r"conditioner\.embedders\.(\d)\.(.+)", module):
            names.add(f"{m[1]}_{m[2].replace('.', '_')}")
    return names


def a1111_finds(key: str, names: set[str], family: str) -> bool:
    name = a1111_convert(key, family)
    if name in names:
        return True
    m = re.match(r"(.*)_([qkv]_proj)$", name)  # fused in_proj of OpenCLIP attention
    if m and m[1] in names:
        return True
    # "SDXL loras seem to already have correct compvis keys": sgm names with lora_unet -> diffusion_model
    return key.startswith("lora_unet_") and key.replace("lora_unet", "diffusion_model", 1) in names


def comfy_keys(ldm: dict[str, torch.Tensor], unet_diffusers: set[str], family: str) -> set[str]:
    """The LoRA key -> layer map ComfyUI builds for this model."""
    keys = set()
    for k in ldm:
        if k.startswith("model.diffusion_model.") and k.endswith(".weight"):
            keys.add("lora_unet_" + k[len("model.diffusion_model."):-len(".weight")].replace(".", "_"))
    for k in unet_diffusers:  # comfy.utils.unet_to_diffusers covers every UNet weight
        keys.add("lora_unet_" + k.replace(".", "_"))
    clip_map = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
                "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
                "self_attn.out_proj": "self_attn_out_proj"}
    for k in ldm:
        m = re.match(r"(cond_stage_model|conditioner\.embedders\.0)\.transformer\.text_model\.encoder\.layers\.(\d+)\.(.+)\.weight$", k)
        if m and m[3] in clip_map:
            prefix = "lora_te" if family == "sd15" else "lora_te1"
            keys.add(f"{prefix}_text_model_encoder_layers_{m[2]}_{clip_map[m[3]]}")
        m = re.match(r"conditioner\.embedders\.1\.model\.transformer\.resblocks\.(\d+)\.", k)
        if m:  # ComfyUI converts OpenCLIP-G to CLIP layout and maps lora_te2_ for all six layers
            for v in clip_map.values():
                keys.add(f"lora_te2_text_model_encoder_layers_{m[1]}_{v}")
    return keys


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_every_key_is_mapped_by_comfyui_and_a1111(family, request, tiny_dataset, tmp_path):
    model = request.getfixturevalue(f"tiny_{family}")
    cfg = tiny_config(model, tiny_dataset, tmp_path, max_train_steps=1, lora_ff=True, lora_proj=True, conv_dim=2)
    comps = train_in_process(cfg).comps
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = (StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline).from_pretrained(model)
    ldm = pipeline_to_ldm_state_dict(family, pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
    unet_modules = {k[: -len(".weight")] for k in pipe.unet.state_dict() if k.endswith(".weight")}

    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        modules = {k.split(".")[0] for k in f.keys()}
    assert any("_conv1" in m or "_in_layers_2" in m for m in modules) and any("_ff_net_" in m for m in modules)
    assert any(m.startswith("lora_te") for m in modules)
    names = a1111_layer_names(ldm, family)
    comfy = comfy_keys(ldm, unet_modules, family)
    assert sorted(m for m in modules if not a1111_finds(m, names, family)) == []
    assert sorted(m for m in modules if m not in comfy) == []
    del comps
