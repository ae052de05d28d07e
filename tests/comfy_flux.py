"""Test-only re-implementation of how ComfyUI loads a LoRA onto a Flux.1 model (pure torch).

Our tests use it to check that every key of a Flux LoRA file we write is mapped by ComfyUI and that
the weight change ComfyUI applies equals the trained change, without installing ComfyUI. It mirrors
(Comfy-Org/ComfyUI, formerly comfyanonymous/ComfyUI, master as of 2026):

* ``comfy/utils.py`` ``flux_to_diffusers`` -> :func:`flux_to_diffusers`: diffusers transformer
  weight/bias key -> BFL key. q/k/v (and ``proj_mlp`` of a single block) are row slices
  ``(BFL key, (dim, offset, length))`` of the fused ``img_attn.qkv`` / ``txt_attn.qkv`` /
  ``linear1`` weights; ``norm_out.linear`` is ``(BFL key, None, swap_scale_shift)`` because BFL
  orders that modulation (shift, scale) and diffusers (scale, shift).
  ``comfy/utils.py`` ``convert_diffusers_mmdit`` (how ComfyUI loads a diffusers-format Flux
  checkpoint) -> :func:`diffusers_to_bfl`.
* ``comfy/lora.py`` ``model_lora_keys_unet`` (generic part + ``isinstance(model, Flux)`` branch)
  and ``model_lora_keys_clip`` -> :func:`lora_key_map`. ``comfy/sd.py`` ``load_lora_for_models``
  builds one key map from the unet and the clip parts, in that order.
* ``comfy/lora_convert.py`` ``convert_lora`` -> :func:`convert_lora` (only detection: the BFL-control
  and USO formats it rewrites raise ``NotImplementedError`` here).
* ``comfy/lora.py`` ``load_lora`` with ``comfy/weight_adapter/lora.py`` ``LoRAAdapter.load``
  -> :func:`load_lora` (recognised spellings, ``.alpha``, ``.dora_scale``, ``.reshape_weight``,
  ``.diff``/``.diff_b``/``.set_weight``, and the "lora key not loaded" warning).
* ``comfy/model_patcher.py`` ``ModelPatcher.add_patches`` / ``patch_weight_to_device``,
  ``comfy/lora.py`` ``calculate_weight``, ``LoRAAdapter.calculate_weight`` and
  ``comfy/weight_adapter/base.py`` ``weight_decompose`` (DoRA), ``pad_tensor_to_shape``
  -> :func:`apply_lora`.

ComfyUI behaviour worth knowing (all reproduced here):

* scale = alpha / rank with rank = ``lora_down.shape[0]`` (``lora_A``) when ``<x>.alpha`` exists,
  else **1.0** (not alpha=rank of the trainer's config: a peft-style file without ``.alpha``
  must have the scale folded into ``lora_B``). The change is ``strength * scale * up @ down``,
  computed in float32 and cast back to the weight's dtype (fp8 gets a plain cast here, ComfyUI
  rounds stochastically).
* Recognised spellings, first match wins: ``.lora_up.weight``/``.lora_down.weight`` (+
  ``.lora_mid.weight``), ``_lora.up.weight``/``_lora.down.weight``, ``.lora_B.weight``/
  ``.lora_A.weight``, ``.lora.up.weight``/``.lora.down.weight``, ``.lora_B``/``.lora_A``,
  ``.lora_linear_layer.up.weight``/``.down.weight``, ``.lora_B.default.weight``/
  ``.lora_A.default.weight``. Anything else under a mapped name (e.g. ``lora_A`` without its
  ``lora_B``, or ``.lora_magnitude_vector``) and every key under an unmapped name is
  "lora key not loaded". ``<x>.alpha`` and ``<x>.dora_scale`` count as loaded as soon as ``x`` is
  a mapped name, even if no up/down pair exists for it.
* Flux unet names: ``transformer.<diffusers module>``, ``lycoris_<diffusers module with _>``,
  ``lora_transformer_<diffusers module with _>``, the bare ``<diffusers module>`` (DiffSynth),
  ``lora_unet_<BFL module with _>``, ``diffusion_model.<BFL module>``, and
  ``diffusion_model.single_blocks.N.linear1_qkv`` (rows 0..3*hidden of linear1). There is no
  ``lora_unet_<diffusers name>`` nor ``unet.`` form for Flux (``unet_to_diffusers`` is empty).
  Only ``.weight`` parameters are LoRA targets.
* CLIP-L names (``clip_l.transformer.text_model.encoder.layers.N.<m>.weight`` in ComfyUI,
  N < 32, m in ``LORA_CLIP_MAP``): ``lora_te_text_model_encoder_layers_N_<m with _>``,
  ``lora_te1_...`` and ``text_encoder.text_model.encoder.layers.N.<m>``; for every clip weight
  also ``text_encoders.<comfy key without .weight>``; T5 weights get ``lora_te2_``/``lora_te3_``.
* A slice target is written in place into its row range of the fused weight (``narrow``); several
  LoRAs on the slices of one fused weight accumulate.
* A patch whose target is not a model key is dropped ("NOT LOADED <target>" in ComfyUI, e.g.
  ``controlnet_x_embedder``), and a LoRA whose ``up @ down`` does not reshape to the target is
  caught and only logged ("ERROR lora <key> ...") - the weight stays unchanged.
* DoRA (``dora_scale``) follows ``weight_decompose``: when ``dora_scale.shape[0]`` equals the
  number of output rows, the norm is taken of the *original* weight, otherwise (LyCORIS shape
  ``(1, in)``) of the merged weight per input column; with strength s the result is
  ``W + s * (W_dora - W)``. A peft-shaped ``(out,)`` magnitude broadcasts wrongly, as in ComfyUI.
* Since ComfyUI's Flux uses ``torch.nn.RMSNorm`` (PR #12432, Feb 2026) its QK-norm parameters are
  ``...query_norm.weight`` internally while BFL checkpoints (and diffusers' converter, older
  ComfyUI) use ``...query_norm.scale``; ``qk_norm_suffix`` selects one and :func:`lora_key_map`
  takes it from the keys it is given. LoRAs never target these norms in practice.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Callable, Union

import torch

logger = logging.getLogger(__name__)

# A key map value: a model key, a row slice (model key, (dim, offset, length)), or
# (model key, None, function) where function is applied to the weight change (swap_scale_shift).
Target = Union[str, tuple]

DIFFUSION_PREFIX = "diffusion_model."

# comfy/lora.py
LORA_CLIP_MAP = {
    "mlp.fc1": "mlp_fc1",
    "mlp.fc2": "mlp_fc2",
    "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.q_proj": "self_attn_q_proj",
    "self_attn.v_proj": "self_attn_v_proj",
    "self_attn.out_proj": "self_attn_out_proj",
}

# comfy/weight_adapter/lora.py LoRAAdapter.load, in its order: (up suffix, down suffix, mid suffix)
LORA_SPELLINGS = (
    (".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"),
    ("_lora.up.weight", "_lora.down.weight", None),
    (".lora_B.weight", ".lora_A.weight", None),
    (".lora.up.weight", ".lora.down.weight", None),
    (".lora_B", ".lora_A", None),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", None),
    (".lora_B.default.weight", ".lora_A.default.weight", None),
)

# Key suffixes of the other weight adapters ComfyUI loads (LoHa, LoKr, GLoRA, OFT/BOFT); not
# re-implemented: meeting one raises instead of wrongly reporting the keys as not loaded.
OTHER_ADAPTER_SUFFIXES = (
    ".hada_w1_a", ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w2_a", ".a1.weight", ".oft_blocks",
)


def swap_scale_shift(weight: torch.Tensor) -> torch.Tensor:
    """comfy/utils.py swap_scale_shift: (shift, scale) <-> (scale, shift) along dim 0."""
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def flux_to_diffusers(
    num_layers: int,
    num_single_layers: int,
    hidden_size: int,
    mlp_ratio: float = 4.0,
    *,
    output_prefix: str = "",
    qk_norm_suffix: str = "scale",
) -> dict[str, Target]:
    """comfy/utils.py flux_to_diffusers: diffusers transformer weight/bias key -> BFL key.

    Values: ``"double_blocks.0.img_mod.lin.weight"``; ``(fused BFL key, (0, offset, length))`` for
    q/k/v (length hidden_size) and proj_mlp (offset 3*hidden, length hidden*mlp_ratio; ComfyUI
    hardcodes mlp_ratio 4); ``(BFL key, None, swap_scale_shift)`` for ``norm_out.linear``.
    ``output_prefix`` is prepended to every BFL key (ComfyUI's LoRA code passes
    ``"diffusion_model."``). ``qk_norm_suffix``: ``"scale"`` (BFL checkpoint names) or ``"weight"``
    (current ComfyUI's internal names). Includes ComfyUI's extra entries that a Flux.1 model lacks
    (``controlnet_x_embedder``, Flux 2 ``attn.to_qkv_mlp_proj``/``attn.to_out`` of single blocks,
    LyCORIS LoKr ``ff.linear_in``/``ff.linear_out``).
    """
    if qk_norm_suffix not in ("scale", "weight"):
        raise ValueError(f"qk_norm_suffix must be 'scale' or 'weight', not {qk_norm_suffix!r}")
    h = hidden_size
    mlp = int(hidden_size * mlp_ratio)
    ns = qk_norm_suffix
    key_map: dict[str, Target] = {}
    for index in range(num_layers):
        prefix_from = f"transformer_blocks.{index}"
        prefix_to = f"{output_prefix}double_blocks.{index}"
        for end in ("weight", "bias"):
            k = f"{prefix_from}.attn."
            qkv = f"{prefix_to}.img_attn.qkv.{end}"
            key_map[f"{k}to_q.{end}"] = (qkv, (0, 0, h))
            key_map[f"{k}to_k.{end}"] = (qkv, (0, h, h))
            key_map[f"{k}to_v.{end}"] = (qkv, (0, h * 2, h))
            qkv = f"{prefix_to}.txt_attn.qkv.{end}"
            key_map[f"{k}add_q_proj.{end}"] = (qkv, (0, 0, h))
            key_map[f"{k}add_k_proj.{end}"] = (qkv, (0, h, h))
            key_map[f"{k}add_v_proj.{end}"] = (qkv, (0, h * 2, h))
        block_map = {
            "attn.to_out.0.weight": "img_attn.proj.weight",
            "attn.to_out.0.bias": "img_attn.proj.bias",
            "norm1.linear.weight": "img_mod.lin.weight",
            "norm1.linear.bias": "img_mod.lin.bias",
            "norm1_context.linear.weight": "txt_mod.lin.weight",
            "norm1_context.linear.bias": "txt_mod.lin.bias",
            "attn.to_add_out.weight": "txt_attn.proj.weight",
            "attn.to_add_out.bias": "txt_attn.proj.bias",
            "ff.net.0.proj.weight": "img_mlp.0.weight",
            "ff.net.0.proj.bias": "img_mlp.0.bias",
            "ff.net.2.weight": "img_mlp.2.weight",
            "ff.net.2.bias": "img_mlp.2.bias",
            "ff_context.net.0.proj.weight": "txt_mlp.0.weight",
            "ff_context.net.0.proj.bias": "txt_mlp.0.bias",
            "ff_context.net.2.weight": "txt_mlp.2.weight",
            "ff_context.net.2.bias": "txt_mlp.2.bias",
            "ff.linear_in.weight": "img_mlp.0.weight",  # LyCORIS LoKr (ComfyUI PR #11997)
            "ff.linear_in.bias": "img_mlp.0.bias",
            "ff.linear_out.weight": "img_mlp.2.weight",
            "ff.linear_out.bias": "img_mlp.2.bias",
            "ff_context.linear_in.weight": "txt_mlp.0.weight",
            "ff_context.linear_in.bias": "txt_mlp.0.bias",
            "ff_context.linear_out.weight": "txt_mlp.2.weight",
            "ff_context.linear_out.bias": "txt_mlp.2.bias",
            "attn.norm_q.weight": f"img_attn.norm.query_norm.{ns}",
            "attn.norm_k.weight": f"img_attn.norm.key_norm.{ns}",
            "attn.norm_added_q.weight": f"txt_attn.norm.query_norm.{ns}",
            "attn.norm_added_k.weight": f"txt_attn.norm.key_norm.{ns}",
        }
        for k, v in block_map.items():
            key_map[f"{prefix_from}.{k}"] = f"{prefix_to}.{v}"

    for index in range(num_single_layers):
        prefix_from = f"single_transformer_blocks.{index}"
        prefix_to = f"{output_prefix}single_blocks.{index}"
        for end in ("weight", "bias"):
            k = f"{prefix_from}.attn."
            qkv = f"{prefix_to}.linear1.{end}"
            key_map[f"{k}to_q.{end}"] = (qkv, (0, 0, h))
            key_map[f"{k}to_k.{end}"] = (qkv, (0, h, h))
            key_map[f"{k}to_v.{end}"] = (qkv, (0, h * 2, h))
            key_map[f"{prefix_from}.proj_mlp.{end}"] = (qkv, (0, h * 3, mlp))
        block_map = {
            "norm.linear.weight": "modulation.lin.weight",
            "norm.linear.bias": "modulation.lin.bias",
            "proj_out.weight": "linear2.weight",
            "proj_out.bias": "linear2.bias",
            "attn.norm_q.weight": f"norm.query_norm.{ns}",
            "attn.norm_k.weight": f"norm.key_norm.{ns}",
            "attn.to_qkv_mlp_proj.weight": "linear1.weight",  # Flux 2
            "attn.to_out.weight": "linear2.weight",  # Flux 2
        }
        for k, v in block_map.items():
            key_map[f"{prefix_from}.{k}"] = f"{prefix_to}.{v}"

    map_basic = [
        ("final_layer.linear.bias", "proj_out.bias"),
        ("final_layer.linear.weight", "proj_out.weight"),
        ("img_in.bias", "x_embedder.bias"),
        ("img_in.weight", "x_embedder.weight"),
        ("time_in.in_layer.bias", "time_text_embed.timestep_embedder.linear_1.bias"),
        ("time_in.in_layer.weight", "time_text_embed.timestep_embedder.linear_1.weight"),
        ("time_in.out_layer.bias", "time_text_embed.timestep_embedder.linear_2.bias"),
        ("time_in.out_layer.weight", "time_text_embed.timestep_embedder.linear_2.weight"),
        ("txt_in.bias", "context_embedder.bias"),
        ("txt_in.weight", "context_embedder.weight"),
        ("vector_in.in_layer.bias", "time_text_embed.text_embedder.linear_1.bias"),
        ("vector_in.in_layer.weight", "time_text_embed.text_embedder.linear_1.weight"),
        ("vector_in.out_layer.bias", "time_text_embed.text_embedder.linear_2.bias"),
        ("vector_in.out_layer.weight", "time_text_embed.text_embedder.linear_2.weight"),
        ("guidance_in.in_layer.bias", "time_text_embed.guidance_embedder.linear_1.bias"),
        ("guidance_in.in_layer.weight", "time_text_embed.guidance_embedder.linear_1.weight"),
        ("guidance_in.out_layer.bias", "time_text_embed.guidance_embedder.linear_2.bias"),
        ("guidance_in.out_layer.weight", "time_text_embed.guidance_embedder.linear_2.weight"),
        ("final_layer.adaLN_modulation.1.bias", "norm_out.linear.bias", swap_scale_shift),
        ("final_layer.adaLN_modulation.1.weight", "norm_out.linear.weight", swap_scale_shift),
        ("pos_embed_input.bias", "controlnet_x_embedder.bias"),
        ("pos_embed_input.weight", "controlnet_x_embedder.weight"),
    ]
    for k in map_basic:
        if len(k) > 2:
            key_map[k[1]] = (f"{output_prefix}{k[0]}", None, k[2])
        else:
            key_map[k[1]] = f"{output_prefix}{k[0]}"
    return key_map


def bfl_to_diffusers_keys_for_model(transformer) -> dict[str, int]:
    """Config of a diffusers ``FluxTransformer2DModel`` as keyword arguments for this module.

    Returns ``{"num_layers": config.num_layers, "num_single_layers": config.num_single_layers,
    "hidden_size": config.num_attention_heads * config.attention_head_dim}``, usable as
    ``flux_to_diffusers(**cfg)``, ``lora_key_map(bfl_keys, **cfg)`` and ``diffusers_to_bfl(sd, **cfg)``
    (diffusers' Flux blocks always use mlp_ratio 4, ComfyUI's default).
    """
    config = transformer.config
    return {
        "num_layers": int(config.num_layers),
        "num_single_layers": int(config.num_single_layers),
        "hidden_size": int(config.num_attention_heads) * int(config.attention_head_dim),
    }


def diffusers_to_bfl(
    diffusers_sd: Mapping[str, torch.Tensor],
    num_layers: int,
    num_single_layers: int,
    hidden_size: int,
    mlp_ratio: float = 4.0,
    *,
    qk_norm_suffix: str = "scale",
) -> dict[str, torch.Tensor]:
    """comfy/utils.py convert_diffusers_mmdit (Flux): a diffusers transformer state dict in BFL layout.

    Sliced q/k/v/proj_mlp rows are written into the fused tensor, norm_out gets swap_scale_shift.
    Returns new tensors keyed by bare BFL names; diffusers keys the map does not know are left out
    (as in ComfyUI). The input is not modified.
    """
    sd_map = flux_to_diffusers(
        num_layers, num_single_layers, hidden_size, mlp_ratio, qk_norm_suffix=qk_norm_suffix
    )
    out: dict[str, torch.Tensor] = {}
    for k, t in sd_map.items():
        weight = diffusers_sd.get(k)
        if weight is None:
            continue
        if isinstance(t, str):
            out[t] = weight.clone()
            continue
        fun = t[2] if len(t) > 2 else (lambda a: a)
        offset = t[1]
        if offset is not None:
            old = out.get(t[0])
            if old is None:
                old = torch.empty_like(weight)
            if old.shape[offset[0]] < offset[1] + offset[2]:
                exp = list(weight.shape)
                exp[offset[0]] = offset[1] + offset[2]
                new = torch.empty(exp, device=weight.device, dtype=weight.dtype)
                new[: old.shape[0]] = old
                old = new
            w = old.narrow(offset[0], offset[1], offset[2])
        else:
            old = torch.empty_like(weight)
            w = old
        w[:] = fun(weight)
        out[t[0]] = old
    return out


def _normalize_unet_key(k: str) -> str:
    return k if k.startswith(DIFFUSION_PREFIX) else DIFFUSION_PREFIX + k


def _model_lora_keys_clip(sdk: list[str], key_map: dict[str, Target]) -> dict[str, Target]:
    """comfy/lora.py model_lora_keys_clip, for ComfyUI clip state-dict keys (clip_l./clip_g./t5xxl....)."""
    keys = set(sdk)
    for k in sdk:
        if k.endswith(".weight"):
            key_map["text_encoders.{}".format(k[: -len(".weight")])] = k  # generic format

    text_model_lora_key = "lora_te_text_model_encoder_layers_{}_{}"
    clip_l_present = False
    clip_g_present = False
    for b in range(32):  # ComfyUI's limit
        for c in LORA_CLIP_MAP:
            k = "clip_h.transformer.text_model.encoder.layers.{}.{}.weight".format(b, c)
            if k in keys:
                key_map[text_model_lora_key.format(b, LORA_CLIP_MAP[c])] = k
                key_map["lora_te1_text_model_encoder_layers_{}_{}".format(b, LORA_CLIP_MAP[c])] = k
                key_map["text_encoder.text_model.encoder.layers.{}.{}".format(b, c)] = k

            k = "clip_l.transformer.text_model.encoder.layers.{}.{}.weight".format(b, c)
            if k in keys:
                key_map[text_model_lora_key.format(b, LORA_CLIP_MAP[c])] = k
                key_map["lora_te1_text_model_encoder_layers_{}_{}".format(b, LORA_CLIP_MAP[c])] = k
                clip_l_present = True
                key_map["text_encoder.text_model.encoder.layers.{}.{}".format(b, c)] = k

            k = "clip_g.transformer.text_model.encoder.layers.{}.{}.weight".format(b, c)
            if k in keys:
                clip_g_present = True
                if clip_l_present:
                    key_map["lora_te2_text_model_encoder_layers_{}_{}".format(b, LORA_CLIP_MAP[c])] = k
                    key_map["text_encoder_2.text_model.encoder.layers.{}.{}".format(b, c)] = k
                else:
                    key_map[text_model_lora_key.format(b, LORA_CLIP_MAP[c])] = k
                    key_map["text_encoder.text_model.encoder.layers.{}.{}".format(b, c)] = k
                    key_map["lora_prior_te_text_model_encoder_layers_{}_{}".format(b, LORA_CLIP_MAP[c])] = k

    for k in sdk:
        if k.endswith(".weight") and k.startswith("t5xxl.transformer."):  # OneTrainer SD3/Flux
            l_key = k[len("t5xxl.transformer."): -len(".weight")]
            t5_index = 1
            if clip_g_present:
                t5_index += 1
            if clip_l_present:
                t5_index += 1
                if t5_index == 2:
                    key_map["lora_te{}_{}".format(t5_index, l_key.replace(".", "_"))] = k  # OneTrainer Flux
                    t5_index += 1
            key_map["lora_te{}_{}".format(t5_index, l_key.replace(".", "_"))] = k

    if "clip_g.transformer.text_projection.weight" in keys:
        key_map["lora_prior_te_text_projection"] = "clip_g.transformer.text_projection.weight"
        key_map["lora_te2_text_projection"] = "clip_g.transformer.text_projection.weight"
    if "clip_l.transformer.text_projection.weight" in keys:
        key_map["lora_te1_text_projection"] = "clip_l.transformer.text_projection.weight"
    return key_map


def lora_key_map(
    bfl_keys: Iterable[str],
    num_layers: int,
    num_single_layers: int,
    hidden_size: int,
    clip_keys: Iterable[str] = (),
) -> dict[str, Target]:
    """LoRA module name -> target, as comfy/sd.py load_lora_for_models builds it for a Flux model.

    ``bfl_keys``: the diffusion model's state-dict keys, bare BFL (``double_blocks.0.img_attn.qkv.weight``)
    or ComfyUI's ``diffusion_model.``-prefixed form. ``clip_keys``: ComfyUI clip state-dict keys
    (``clip_l.transformer.text_model.encoder.layers.N.self_attn.q_proj.weight``, ``t5xxl.transformer....``).
    Targets are ``"diffusion_model.<BFL key>"`` / clip keys, or the tuples of :func:`flux_to_diffusers`
    (also prefixed). The QK-norm suffix of the diffusers mapping follows ``bfl_keys``.
    """
    sdk = [_normalize_unet_key(k) for k in bfl_keys]
    key_map: dict[str, Target] = {}
    # model_lora_keys_unet, generic part
    for k in sdk:
        if k.endswith(".weight"):
            key_lora = k[len(DIFFUSION_PREFIX): -len(".weight")].replace(".", "_")
            key_map["lora_unet_{}".format(key_lora)] = k
            key_map[k[: -len(".weight")]] = k  # generic format without weird key names
        else:
            key_map[k] = k  # generic format for non-.weight keys
    # unet_to_diffusers(unet_config) is {} for Flux (no "num_res_blocks").
    # Flux branch
    suffix = "weight" if any(k.endswith("query_norm.weight") for k in sdk) else "scale"
    diffusers_keys = flux_to_diffusers(
        num_layers, num_single_layers, hidden_size, output_prefix=DIFFUSION_PREFIX, qk_norm_suffix=suffix
    )
    for k, to in diffusers_keys.items():
        if k.endswith(".weight"):
            base = k[: -len(".weight")]
            key_map["transformer.{}".format(base)] = to  # simpletrainer / diffusers
            key_map["lycoris_{}".format(base.replace(".", "_"))] = to  # simpletrainer lycoris
            key_map["lora_transformer_{}".format(base.replace(".", "_"))] = to  # onetrainer
            key_map[base] = to  # DiffSynth
    for k in sdk:
        if k.endswith(".weight") and ".linear1." in k:
            key_map[k.replace(".linear1.weight", ".linear1_qkv")] = (k, (0, 0, hidden_size * 3))
    clip_keys = list(clip_keys)
    if clip_keys:
        _model_lora_keys_clip(clip_keys, key_map)
    return key_map


def convert_lora(lora_sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """comfy/lora_convert.py convert_lora: identity for every format but a few it rewrites."""
    if "img_in.lora_A.weight" in lora_sd and "single_blocks.0.norm.key_norm.scale" in lora_sd:
        raise NotImplementedError("BFL control LoRA (convert_lora_bfl_control) is not re-implemented")
    if ("single_blocks.37.processor.qkv_lora.up.weight" in lora_sd
            and "double_blocks.18.processor.qkv_lora2.up.weight" in lora_sd):
        raise NotImplementedError("USO LoRA (convert_uso_lora) is not re-implemented")
    if "lora_unet__blocks_0_cross_attn_k.lora_down.weight" in lora_sd:
        raise NotImplementedError("Wan Fun LoRA (convert_lora_wan_fun) is not re-implemented")
    return lora_sd


def _target_name(target: Target) -> str:
    return target if isinstance(target, str) else target[0]


def load_lora(
    lora_sd: Mapping[str, torch.Tensor], key_map: Mapping[str, Target]
) -> tuple[dict, list[str], dict]:
    """comfy/lora.py load_lora with LoRAAdapter.load.

    Returns ``(patches, not_loaded, sources)``: ``patches`` maps a target (key map value) to
    ``("lora", (up, down, alpha, mid, dora_scale, reshape))``, ``("diff", (tensor,))`` or
    ``("set", (tensor,))``; ``not_loaded`` lists the LoRA keys ComfyUI warns "lora key not loaded"
    for, in file order; ``sources`` maps each patch target to the LoRA keys it was built from.
    """
    patch_dict: dict = {}
    sources: dict = {}
    loaded_keys: set[str] = set()
    keys = lora_sd.keys()
    for x in key_map:
        target = key_map[x]
        alpha_name = "{}.alpha".format(x)
        alpha = None
        if alpha_name in keys:
            alpha = lora_sd[alpha_name].item()
            loaded_keys.add(alpha_name)

        dora_scale_name = "{}.dora_scale".format(x)
        dora_scale = None
        if dora_scale_name in keys:
            dora_scale = lora_sd[dora_scale_name]
            loaded_keys.add(dora_scale_name)

        for suffix in OTHER_ADAPTER_SUFFIXES:
            if x + suffix in keys:
                raise NotImplementedError(f"{x + suffix}: LoHa/LoKr/GLoRA/OFT adapters are not re-implemented")

        for up_suffix, down_suffix, mid_suffix in LORA_SPELLINGS:
            up_name = x + up_suffix
            if up_name not in keys:
                continue
            down_name = x + down_suffix
            used = [up_name, down_name]
            mid = None
            if mid_suffix is not None and x + mid_suffix in keys:
                mid = lora_sd[x + mid_suffix]
                used.append(x + mid_suffix)
            reshape = None
            if "{}.reshape_weight".format(x) in keys:
                try:
                    reshape = lora_sd["{}.reshape_weight".format(x)].tolist()
                    used.append("{}.reshape_weight".format(x))
                except Exception:
                    pass
            patch_dict[target] = ("lora", (lora_sd[up_name], lora_sd[down_name], alpha, mid, dora_scale, reshape))
            extra = [n for n in (alpha_name, dora_scale_name) if n in keys]
            sources[target] = used + extra
            loaded_keys.update(used)
            break

        w_norm_name = "{}.w_norm".format(x)
        b_norm_name = "{}.b_norm".format(x)
        w_norm = lora_sd.get(w_norm_name)
        b_norm = lora_sd.get(b_norm_name)
        if w_norm is not None:
            loaded_keys.add(w_norm_name)
            patch_dict[target] = ("diff", (w_norm,))
            sources[target] = [w_norm_name]
            if b_norm is not None:
                loaded_keys.add(b_norm_name)
                bias_target = "{}.bias".format(target[: -len(".weight")])
                patch_dict[bias_target] = ("diff", (b_norm,))
                sources[bias_target] = [b_norm_name]

        diff_name = "{}.diff".format(x)
        diff_weight = lora_sd.get(diff_name)
        if diff_weight is not None:
            patch_dict[target] = ("diff", (diff_weight,))
            sources[target] = [diff_name]
            loaded_keys.add(diff_name)

        diff_bias_name = "{}.diff_b".format(x)
        diff_bias = lora_sd.get(diff_bias_name)
        if diff_bias is not None:
            # ComfyUI slices the target itself; for a tuple target this gives a bogus key that
            # add_patches then drops (NOT LOADED), reproduced as is.
            bias_target = "{}.bias".format(target[: -len(".weight")])
            patch_dict[bias_target] = ("diff", (diff_bias,))
            sources[bias_target] = [diff_bias_name]
            loaded_keys.add(diff_bias_name)

        set_weight_name = "{}.set_weight".format(x)
        set_weight = lora_sd.get(set_weight_name)
        if set_weight is not None:
            patch_dict[target] = ("set", (set_weight,))
            sources[target] = [set_weight_name]
            loaded_keys.add(set_weight_name)

    not_loaded = [k for k in lora_sd.keys() if k not in loaded_keys]
    for k in not_loaded:
        logger.warning("lora key not loaded: %s", k)
    return patch_dict, not_loaded, sources


def pad_tensor_to_shape(tensor: torch.Tensor, new_shape: list[int]) -> torch.Tensor:
    """comfy/weight_adapter/base.py pad_tensor_to_shape."""
    if any(new_shape[i] < tensor.shape[i] for i in range(len(new_shape))):
        raise ValueError("The new shape must be larger than the original tensor in all dimensions")
    if len(new_shape) != len(tensor.shape):
        raise ValueError("The new shape must have the same number of dimensions as the original tensor")
    padded = torch.zeros(new_shape, dtype=tensor.dtype, device=tensor.device)
    slices = tuple(slice(0, d) for d in tensor.shape)
    padded[slices] = tensor[slices]
    return padded


def weight_decompose(dora_scale, weight, lora_diff, alpha, strength, intermediate_dtype, function):
    """comfy/weight_adapter/base.py weight_decompose (DoRA), in place on ``weight`` like ComfyUI."""
    dora_scale = dora_scale.to(weight.device, intermediate_dtype)
    lora_diff *= alpha
    weight_calc = weight + function(lora_diff).type(weight.dtype)
    wd_on_output_axis = dora_scale.shape[0] == weight_calc.shape[0]
    if wd_on_output_axis:
        weight_norm = (
            weight.reshape(weight.shape[0], -1)
            .norm(dim=1, keepdim=True)
            .reshape(weight.shape[0], *[1] * (weight.dim() - 1))
        )
    else:
        weight_norm = (
            weight_calc.transpose(0, 1)
            .reshape(weight_calc.shape[1], -1)
            .norm(dim=1, keepdim=True)
            .reshape(weight_calc.shape[1], *[1] * (weight_calc.dim() - 1))
            .transpose(0, 1)
        )
    weight_norm = weight_norm + torch.finfo(weight.dtype).eps
    weight_calc *= (dora_scale / weight_norm).type(weight.dtype)
    if strength != 1.0:
        weight_calc -= weight
        weight += strength * weight_calc
    else:
        weight[:] = weight_calc
    return weight


def _lora_calculate_weight(v, weight, key, strength, function, intermediate_dtype=torch.float32):
    """LoRAAdapter.calculate_weight; returns the weight, unchanged when ComfyUI logs an ERROR."""
    up, down, alpha, mid, dora_scale, reshape = v
    mat1 = up.to(weight.device, intermediate_dtype)
    mat2 = down.to(weight.device, intermediate_dtype)
    if reshape is not None:
        weight = pad_tensor_to_shape(weight, reshape)
    scale = alpha / mat2.shape[0] if alpha is not None else 1.0
    if mid is not None:
        raise NotImplementedError(f"{key}: lora_mid (LoCon tucker) is not re-implemented")
    try:
        lora_diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
        if dora_scale is not None:
            weight = weight_decompose(dora_scale, weight, lora_diff, scale, strength, intermediate_dtype, function)
        else:
            weight += function(((strength * scale) * lora_diff).type(weight.dtype))
    except Exception as e:  # ComfyUI: logging.error("ERROR {} {} {}".format(self.name, key, e))
        logger.error("ERROR lora %s %s", key, e)
        return weight, False
    return weight, True


def _calculate_weight(patches, weight, key, intermediate_dtype=torch.float32):
    """comfy/lora.py calculate_weight for "lora", "diff" and "set" patches; returns (weight, failed sources)."""
    failed = []
    for strength, v, strength_model, offset, function, src in patches:
        if function is None:
            function = lambda a: a  # noqa: E731
        old_weight = None
        if offset is not None:
            old_weight = weight
            weight = weight.narrow(offset[0], offset[1], offset[2])
        if strength_model != 1.0:
            weight *= strength_model
        patch_type, args = v
        if patch_type == "lora":
            out, ok = _lora_calculate_weight(args, weight, key, strength, function, intermediate_dtype)
            if not ok:
                failed.extend(src)
            weight = out
        elif patch_type == "diff":
            diff = args[0]
            if strength != 0.0:
                if diff.shape != weight.shape:
                    logger.warning("WARNING SHAPE MISMATCH %s WEIGHT NOT MERGED %s != %s", key, diff.shape, weight.shape)
                    failed.extend(src)
                else:
                    weight += function(strength * diff.to(weight.device, weight.dtype))
        elif patch_type == "set":
            weight.copy_(args[0])
        else:  # pragma: no cover
            raise NotImplementedError(patch_type)
        if old_weight is not None:
            weight = old_weight
    return weight, failed


def apply_lora(
    model_sd: Mapping[str, torch.Tensor],
    lora_sd: Mapping[str, torch.Tensor],
    key_map: Mapping[str, Target],
    strength: float = 1.0,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply a LoRA file the way ComfyUI's LoraLoader does (strength_model = strength_clip = strength).

    ``model_sd`` may be keyed by ComfyUI names (``diffusion_model.<BFL>``, ``clip_l.transformer....``)
    or by bare BFL names; a ``diffusion_model.`` target missing from it is looked up without the
    prefix. It is not modified.

    Returns ``(patched, not_loaded)``: ``patched`` holds only the tensors that received a patch, as
    new tensors in their original dtype, keyed like ``model_sd`` (merge with
    ``{**model_sd, **patched}``). ``not_loaded`` lists every LoRA key whose content does not reach
    the weights: the "lora key not loaded" keys of :func:`load_lora` (file order), then the keys of
    patches whose target is not in ``model_sd`` (ComfyUI's "NOT LOADED <target>") and of LoRA/diff
    patches ComfyUI catches as errors (shape mismatch: "ERROR lora ..."/"SHAPE MISMATCH").
    """
    lora_sd = convert_lora(lora_sd)
    patches, not_loaded, sources = load_lora(lora_sd, key_map)
    not_loaded = list(not_loaded)

    # ModelPatcher.add_patches (strength_patch=strength, strength_model=1.0)
    per_key: dict[str, list] = {}
    for target, patch in patches.items():
        offset = None
        function: Callable | None = None
        if isinstance(target, str):
            key = target
        else:
            key = target[0]
            offset = target[1]
            if len(target) > 2:
                function = target[2]
        sd_key = None
        if isinstance(key, str):
            if key in model_sd:
                sd_key = key
            elif key.startswith(DIFFUSION_PREFIX) and key[len(DIFFUSION_PREFIX):] in model_sd:
                sd_key = key[len(DIFFUSION_PREFIX):]
        if sd_key is None:
            logger.warning("NOT LOADED %s", target)
            not_loaded.extend(sources.get(target, []))
            continue
        per_key.setdefault(sd_key, []).append((strength, patch, 1.0, offset, function, sources.get(target, [])))

    # ModelPatcher.patch_weight_to_device: float32 copy, calculate_weight, cast back
    patched: dict[str, torch.Tensor] = {}
    for sd_key, plist in per_key.items():
        orig = model_sd[sd_key]
        temp = orig.detach().to(dtype=torch.float32, copy=True)
        out, failed = _calculate_weight(plist, temp, sd_key)
        not_loaded.extend(failed)
        patched[sd_key] = out.to(orig.dtype)
    return patched, not_loaded


# ----------------------------------------------------------------------------------------------
# Self-check: python tests/comfy_flux.py


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


def _self_check() -> None:
    gen = torch.Generator().manual_seed(0)
    cfg = {"num_layers": 2, "num_single_layers": 2, "hidden_size": 8}
    d_sd = _synthetic_diffusers_sd(cfg["num_layers"], cfg["num_single_layers"], cfg["hidden_size"], gen)
    bfl = diffusers_to_bfl(d_sd, **cfg)
    fmap = flux_to_diffusers(**cfg)
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

    clip_keys = [f"clip_l.transformer.text_model.encoder.layers.0.{m}.weight" for m in LORA_CLIP_MAP]
    clip_sd = {k: torch.randn(8, 8, generator=gen) for k in clip_keys}
    key_map = lora_key_map(list(bfl), clip_keys=clip_keys, **cfg)

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

    patched, not_loaded = apply_lora({**bfl, **clip_sd}, lora, key_map, strength)
    assert not_loaded == ["transformer.not_a_module.lora_A.weight"], not_loaded
    merged = {**bfl, **clip_sd, **patched}
    expected_bfl = diffusers_to_bfl(expected_d, **cfg)
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
    patched, not_loaded = apply_lora(bfl, lk, key_map)
    assert not not_loaded
    exp = bfl["single_blocks.1.linear1.weight"] + (6.0 / rank) * (
        lk["lora_unet_single_blocks_1_linear1.lora_up.weight"] @ lk["lora_unet_single_blocks_1_linear1.lora_down.weight"])
    torch.testing.assert_close(patched["single_blocks.1.linear1.weight"], exp)
    print("comfy_flux self-check passed")


if __name__ == "__main__":
    _self_check()
