"""Test-only re-implementation of how ComfyUI loads a LoRA onto a Flux.1 model (pure torch).

Our tests use it to check that every key of a Flux LoRA file we write is mapped by ComfyUI and that
the weight change ComfyUI applies equals the trained change, without installing ComfyUI. It mirrors
(Comfy-Org/ComfyUI, formerly comfyanonymous/ComfyUI, master as of 2026):

* ``comfy/utils.py`` ``flux_to_diffusers`` -> :func:`flux_to_diffusers` (tests/comfy_flux_keys.py, imported
  here, as is :func:`diffusers_to_bfl`): diffusers transformer weight/bias key -> BFL key. q/k/v (and
  ``proj_mlp`` of a single block) are row slices ``(BFL key, (dim, offset, length))`` of the fused
  ``img_attn.qkv`` / ``txt_attn.qkv`` / ``linear1`` weights; ``norm_out.linear`` is
  ``(BFL key, None, swap_scale_shift)`` because BFL orders that modulation (shift, scale) and diffusers
  (scale, shift).
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
from typing import Callable

import torch

from comfy_flux_keys import (  # noqa: F401 (the key naming, in its own module; importers reach it here too)
    Target, bfl_to_diffusers_keys_for_model, diffusers_to_bfl, flux_to_diffusers, swap_scale_shift,
)

logger = logging.getLogger(__name__)

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
