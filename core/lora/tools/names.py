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

from ... import families
from ..kohya_format import kohya_name

PART_TITLES = {"unet": "UNet", "transformer": "transformer", "text_encoder": "text encoder",
               "text_encoder_2": "text encoder 2"}


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


TEXT_ENCODERS = (("text_encoder", "CLIPTextModel"), ("text_encoder_2", "CLIPTextModelWithProjection"))


def _build(family: str, root: Path) -> NameTable:
    from ...ml_lock import ML_IMPORT_LOCK
    from ...models.meta import meta_diffusers, meta_transformers

    fam = families.family_module(family)
    spec = fam.spec
    table = NameTable(family)
    layers: list[Layer] = []
    with ML_IMPORT_LOCK:  # one build at a time
        den = meta_diffusers(root / spec.denoiser)
        layers += _linear_conv_layers(den, spec.denoiser)
        for i, (part, default) in enumerate(TEXT_ENCODERS):
            if (spec.lora_text_encoders is None or i in spec.lora_text_encoders) and (root / part).is_dir():
                layers += _text_layers(meta_transformers(root / part, default), part)
    blocks = den.config.get("up_block_types")
    up_attention = {i for i, t in enumerate(blocks) if "CrossAttn" in t} if blocks else None
    for layer in layers:
        _add(table, layer, fam, up_attention)
    return table


def _text_layers(te, part: str) -> list[Layer]:
    layers = _linear_conv_layers(te, part)
    for layer in layers:
        if not layer.path.startswith("text_model."):
            layer.path = f"text_model.{layer.path}"  # transformers 5 dropped the level the loaders keep
    return [layer for layer in layers if layer.path.startswith("text_model.encoder.")]


def _add(table: NameTable, layer: Layer, fam, up_attention) -> None:
    key = layer.key
    table.layers[key] = layer
    names = [key]
    if layer.part == fam.spec.denoiser:
        names += fam.tool_layer_names(table, layer, up_attention)
    else:
        index = [p for p, _ in TEXT_ENCODERS].index(layer.part)
        written = fam.te_lora_prefixes[index]
        prefixes = tuple(dict.fromkeys(("lora_te", written) if index == 0 else (written,)))
        names += [kohya_name(p, layer.path) for p in prefixes]
        names.append(f"{layer.part}.{layer.path[len('text_model.'):]}")  # peft keys without `text_model.`
        table.kohya_out[key] = kohya_name(written, layer.path)
    for n in names:
        table.aliases.setdefault(n, key)


@lru_cache(maxsize=8)
def _cached(family: str, root: str) -> NameTable:
    return _build(family, Path(root))


def name_table(family: str, base_dir: str | None = None) -> NameTable:
    """The layers of a `family` model (configs from the diffusers folder `base_dir`, else the shipped ones)."""
    if families.find(family) is None:
        raise ValueError(f"LoRA tools know {', '.join(f.title for f in families.all_families())}, not {family!r}")
    return _cached(family, str(_config_root(family, base_dir).resolve()))
