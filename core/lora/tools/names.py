"""Which layers a LoRA module name can mean, per model family.

A table lists every Linear/Conv2d layer of a family's denoiser and text encoders (module path in diffusers
form, weight shape) and every name the loaders accept for it: kohya keys with diffusers paths
(`lora_unet_down_blocks_0_attentions_0_..`, what sd-scripts writes for SD1.5) or sgm/LDM paths
(`lora_unet_input_blocks_1_1_..`, SDXL), `lora_te_` / `lora_te1_` / `lora_te2_` text-encoder keys, the
diffusers/peft form (`unet.<path>`, `transformer.<path>`, `text_encoder.text_model.<path>`) and ComfyUI's
`diffusion_model.<ldm path>`. The models are built on the meta device from the base model's config (or the
shipped configs), so no weights are read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..kohya_format import kohya_name

PART_TITLES = {"unet": "UNet", "transformer": "transformer", "text_encoder": "text encoder",
               "text_encoder_2": "text encoder 2"}
DENOISER = {"sd15": "unet", "sd2": "unet", "sdxl": "unet", "flux": "transformer"}
KOHYA_TE = {"text_encoder": ("lora_te", "lora_te1"), "text_encoder_2": ("lora_te2",)}


@dataclass
class Layer:
    part: str  # unet / transformer / text_encoder / text_encoder_2
    path: str  # diffusers module path inside the part (text encoders: with `text_model.`)
    shape: tuple[int, ...]  # weight shape (out, in[, kh, kw])

    @property
    def key(self) -> str:
        return f"{self.part}.{self.path}"


@dataclass
class NameTable:
    family: str
    layers: dict[str, Layer] = field(default_factory=dict)  # canonical key -> layer
    aliases: dict[str, str] = field(default_factory=dict)  # any accepted module name -> canonical key
    kohya_out: dict[str, str] = field(default_factory=dict)  # canonical key -> the kohya name we write
    # Flux: names of fused BFL layers (`lora_unet_double_blocks_0_img_attn_qkv`) -> BFL path, and a BFL path ->
    # the diffusers layers it holds, with their places (flux_bfl.Place)
    fused: dict[str, str] = field(default_factory=dict)
    bfl_parts: dict[str, list] = field(default_factory=dict)

    def resolve(self, name: str) -> Layer | None:
        key = self.aliases.get(name)
        return self.layers.get(key) if key else None

    def parts(self) -> list[str]:
        return sorted({layer.part for layer in self.layers.values()}, key=list(PART_TITLES).index)


def _linear_conv_layers(model, part: str, prefix: str = "") -> list[Layer]:
    from torch import nn

    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            out.append(Layer(part, prefix + name, tuple(mod.weight.shape)))
    return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _config_root(family: str, base_dir: str | None) -> Path:
    from ...models.loading import shipped_config_dir

    if base_dir and (Path(base_dir) / "model_index.json").is_file():
        return Path(base_dir)
    return shipped_config_dir(family)


def _build(family: str, root: Path) -> NameTable:
    import torch

    table = NameTable(family)
    layers: list[Layer] = []
    from ...ml_lock import ML_IMPORT_LOCK

    # one build at a time; torch.device("meta") is thread-local (accelerate's init_empty_weights would patch nn.Module
    # for every thread, the Generate engine's loading included)
    with ML_IMPORT_LOCK, torch.device("meta"):
        if family == "flux":
            from diffusers import FluxTransformer2DModel

            den = FluxTransformer2DModel.from_config(_read_json(root / "transformer" / "config.json"))
        else:
            from diffusers import UNet2DConditionModel

            den = UNet2DConditionModel.from_config(_read_json(root / "unet" / "config.json"))
        layers += _linear_conv_layers(den, DENOISER[family])
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        te = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
        layers += _text_layers(te, "text_encoder")
        if family == "sdxl":
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(root / "text_encoder_2"))
            layers += _text_layers(te2, "text_encoder_2")
    up_attention = None
    if family != "flux":
        cfg = den.config
        up_attention = {i for i, t in enumerate(cfg["up_block_types"]) if "CrossAttn" in t}
    for layer in layers:
        _add(table, layer, family, up_attention)
    return table


def _text_layers(te, part: str) -> list[Layer]:
    layers = _linear_conv_layers(te, part)
    for layer in layers:
        if not layer.path.startswith("text_model."):
            layer.path = f"text_model.{layer.path}"  # transformers 5 dropped the level the loaders keep
    return [layer for layer in layers if layer.path.startswith("text_model.encoder.")]


def _add(table: NameTable, layer: Layer, family: str, up_attention) -> None:
    from ...models.ldm_convert import unet_module_to_ldm

    key = layer.key
    table.layers[key] = layer
    names = [key]
    if layer.part == "unet":
        names.append(kohya_name("lora_unet", layer.path))
        try:
            ldm = unet_module_to_ldm(layer.path, family, up_attention_blocks=up_attention)
        except ValueError:
            ldm = None
        if ldm:
            names += [kohya_name("lora_unet", ldm), f"diffusion_model.{ldm}"]
        table.kohya_out[key] = kohya_name("lora_unet", ldm if (family == "sdxl" and ldm) else layer.path)
    elif layer.part == "transformer":
        from .flux_bfl import place

        table.kohya_out[key] = key  # Flux LoRAs are written in the diffusers form (the kohya form: flux_bfl)
        names += [layer.path, kohya_name("lora_transformer", layer.path), kohya_name("lycoris", layer.path)]
        p = place(layer.path)
        if p is not None:
            table.bfl_parts.setdefault(p.bfl, []).append((key, p))
            bfl_names = [kohya_name("lora_unet", p.bfl), f"diffusion_model.{p.bfl}"]
            if p.layout == "whole":
                names += bfl_names
            else:
                for n in bfl_names:
                    table.fused[n] = p.bfl
    else:
        prefixes = KOHYA_TE[layer.part] if family == "sdxl" else ("lora_te", "lora_te1") if family == "flux" else ("lora_te",)
        names += [kohya_name(p, layer.path) for p in prefixes]
        names.append(f"{layer.part}.{layer.path[len('text_model.'):]}")  # peft keys without `text_model.`
        table.kohya_out[key] = kohya_name(prefixes[-1], layer.path)
    for n in names:
        table.aliases.setdefault(n, key)


@lru_cache(maxsize=8)
def _cached(family: str, root: str) -> NameTable:
    return _build(family, Path(root))


def name_table(family: str, base_dir: str | None = None) -> NameTable:
    """The layers of a `family` model (configs from the diffusers folder `base_dir`, else the shipped ones)."""
    if family not in DENOISER:
        raise ValueError(f"LoRA tools know SD 1.5, SD 2.x, SDXL and Flux, not {family!r}")
    return _cached(family, str(_config_root(family, base_dir).resolve()))
