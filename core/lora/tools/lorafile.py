"""A LoRA file as modules: read any of the key forms the loaders accept, compute each module's change, write
our two forms.

Every module is (name in the file, kind, tensors, alpha). The change a loader applies at strength 1 is
`delta()`: LoRA `(alpha/rank) * up @ down` (Tucker `lora_mid` included), LoHa `(alpha/rank) * (w1a@w1b) *
(w2a@w2b)`, LoKr `(alpha/rank) * kron(w1, w2)` (scale 1 when neither factor is decomposed), as ComfyUI's
`comfy/weight_adapter` and A1111's `extensions-builtin/Lora` compute them. A missing alpha means alpha =
rank (scale 1), as in every loader. DoRA modules (`dora_scale`) depend on the base weight; only a merge into
a base model applies them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ... import families

KOHYA_SUFFIXES = {  # tensor name after the module name -> our tensor role
    "lora_down.weight": "down", "lora_up.weight": "up", "lora_mid.weight": "mid", "alpha": "alpha",
    "dora_scale": "dora_scale", "hada_w1_a": "w1a", "hada_w1_b": "w1b", "hada_w2_a": "w2a", "hada_w2_b": "w2b",
    "hada_t1": "t1", "hada_t2": "t2", "lokr_w1": "w1", "lokr_w1_a": "w1a", "lokr_w1_b": "w1b", "lokr_w2": "w2",
    "lokr_w2_a": "w2a", "lokr_w2_b": "w2b", "lokr_t2": "t2",
    # diffusers / peft
    "lora_A.weight": "down", "lora_B.weight": "up", "lora_magnitude_vector": "dora_scale",
    "lora.down.weight": "down", "lora.up.weight": "up",
}
_SUFFIX_RE = re.compile(r"^(.+?)\.(" + "|".join(re.escape(s) for s in sorted(KOHYA_SUFFIXES, key=len, reverse=True))
                        + r")$")
FORMAT_TITLES = {"kohya": "kohya (sd-scripts keys)", "diffusers": "diffusers / peft keys",
                 "comfyui": "ComfyUI (diffusion_model. keys)"}
KIND_TITLES = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "dora": "DoRA"}


class ToolError(ValueError):
    """Bad input for a LoRA tool; the message names the file or option and says what to do."""


@dataclass
class Module:
    name: str  # module name as in the file (without the tensor suffix)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # role -> tensor (alpha excluded)
    alpha: float | None = None

    raw_suffixes: set = field(default_factory=set)  # the tensor suffixes found in the file
    raw: dict = field(default_factory=dict)  # suffix -> tensor as in the file (LoHa/LoKr are written back so)

    @property
    def kind(self) -> str:
        if any(s.startswith("hada_") for s in self.raw_suffixes):
            return "loha"
        if any(s.startswith("lokr_") for s in self.raw_suffixes):
            return "lokr"
        return "dora" if "dora_scale" in self.tensors else "lora"

    @property
    def rank(self) -> int | None:
        t = self.tensors
        kind = self.kind
        if kind in ("lora", "dora"):
            return int(t["down"].shape[0])
        if kind == "loha":
            return int(t["w1b"].shape[0])
        for k in ("w1b", "w2b"):  # LoKr: the decomposed factor's rank
            if k in t:
                return int(t[k].shape[0])
        return None

    @property
    def scale(self) -> float:
        """alpha / rank, as the loaders apply it (1 without alpha, or for a LoKr without decomposed factors)."""
        r = self.rank
        return 1.0 if self.alpha is None or not r else float(self.alpha) / r

    @property
    def conv(self) -> bool:
        t = self.tensors.get("down", self.tensors.get("w1b", self.tensors.get("w2b")))
        return t is not None and t.dim() == 4

    def delta(self, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The dense change at strength 1 (float32), reshaped to `shape` (the layer's weight shape) if given."""
        t = {k: v.float() for k, v in self.tensors.items()}
        kind = self.kind
        if kind in ("lora", "dora"):
            up, down = t["up"], t["down"]
            if "mid" in t:
                d = torch.einsum("ar,rbhw->abhw", up.flatten(1), torch.einsum("rshw,si->rihw", t["mid"], down.flatten(1)))
            else:
                d = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])
        elif kind == "loha":
            w1 = _tucker(t.get("t1"), t["w1a"], t["w1b"])
            w2 = _tucker(t.get("t2"), t["w2a"], t["w2b"])
            d = w1 * w2
        else:
            w1 = t["w1"] if "w1" in t else t["w1a"] @ t["w1b"]
            w2 = t["w2"] if "w2" in t else _tucker(t.get("t2"), t["w2a"], t["w2b"])
            if w2.dim() == 4 and w1.dim() == 2:
                w1 = w1[:, :, None, None]
            d = torch.kron(w1, w2.contiguous())  # a Tucker-rebuilt w2 is a non-contiguous einsum result
        d = d * self.scale
        if shape is not None:
            if d.numel() != _numel(shape):
                raise ToolError(f"{self.name}: its change has {tuple(d.shape)} values, the layer {tuple(shape)}")
            d = d.reshape(shape)
        return d

    def applied_to(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """`weight` (float32) with this module applied at `strength`. DoRA as trained (peft): the magnitude over the
        row norm of W + dW, blended by strength; it is per output row, so a row slice of a fused weight works too."""
        calc = weight + self.delta(tuple(weight.shape)) * (1.0 if self.kind == "dora" else strength)
        if self.kind != "dora":
            return calc
        ones = [1] * (calc.dim() - 1)
        norm = calc.reshape(calc.shape[0], -1).norm(dim=1).reshape(-1, *ones)
        full = calc * (self.tensors["dora_scale"].float().reshape(-1, *ones) / norm)
        return weight + strength * (full - weight)

    def low_rank(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(up (out, r), down (r, in*k*k)) in float32 with the scale folded into up, for plain LoRA modules."""
        if self.kind != "lora" or "mid" in self.tensors:
            return None
        up, down = self.tensors["up"].float(), self.tensors["down"].float()
        return up.flatten(1) * self.scale, down.flatten(1)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _tucker(t, wa, wb):
    if t is None:
        return wa @ wb.flatten(1) if wb.dim() > 2 else wa @ wb
    return torch.einsum("ijkl,jr,ip->prkl", t, wb, wa)


@dataclass
class LoraFile:
    path: Path
    modules: dict[str, Module]
    metadata: dict[str, str]
    format: str  # kohya / diffusers / comfyui
    unknown: list[str]  # tensor keys that are not LoRA tensors of a module
    dtype: torch.dtype

    @property
    def kinds(self) -> set[str]:
        return {m.kind for m in self.modules.values()}

    def family_from_metadata(self) -> str | None:
        m = self.metadata
        return families.of_architecture(m.get("modelspec.architecture", "")) or families.of_version(
            m.get("ss_base_model_version", ""))


def read_lora(path: str | Path) -> LoraFile:
    """Read a .safetensors LoRA into modules; clear errors for files that are not LoRAs."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise ToolError(f"LoRA file not found: {p}")
    if p.suffix.lower() != ".safetensors":
        raise ToolError(f"{p.name}: LoRA tools read .safetensors files only (a .pt/.ckpt file can hold code; "
                        "convert it with a trusted tool first)")
    try:
        sd = load_file(str(p))
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ToolError(f"{p.name} is not a readable .safetensors file ({e}); download or copy it again") from e
    modules: dict[str, Module] = {}
    unknown = []
    for key, t in sd.items():
        m = _SUFFIX_RE.match(key)
        if not m:
            unknown.append(key)
            continue
        name, suffix = m[1], m[2]
        mod = modules.setdefault(name, Module(name))
        mod.raw_suffixes.add(suffix)
        mod.raw[suffix] = t
        role = KOHYA_SUFFIXES[suffix]
        if role == "alpha":
            mod.alpha = float(t.float().item())
        else:
            mod.tensors[role] = t
    for name, mod in list(modules.items()):
        if not mod.tensors:  # an alpha without weights, or a diffusers `.alpha` of a peft module
            del modules[name]
            unknown.append(f"{name}.alpha")
    # diffusers files may keep `<module>.alpha` next to `<module>.lora_A.weight`: both have the same name
    if not modules:
        what = "a base model or another kind of file" if len(sd) > 50 else "empty of LoRA tensors"
        raise ToolError(f"{p.name} holds no LoRA modules ({len(sd)} tensors, {what}); choose a LoRA file")
    for mod in modules.values():
        kind = mod.kind
        needs = {"lora": ("down", "up"), "dora": ("down", "up"), "loha": ("w1a", "w1b", "w2a", "w2b")}.get(kind, ())
        missing = [r for r in needs if r not in mod.tensors]
        if missing:
            raise ToolError(f"{p.name}: module {mod.name} lacks its {', '.join(missing)} tensor(s); the file is "
                            "damaged or of a form the tools do not know")
    first = next(iter(modules))
    fmt = ("diffusers" if any(k.endswith(("lora_A.weight", "lora_B.weight")) for k in sd) else
           "comfyui" if first.startswith("diffusion_model.") else "kohya")
    dtype = next(iter(next(iter(modules.values())).tensors.values())).dtype
    return LoraFile(p, modules, metadata, fmt, sorted(unknown), dtype)


def guess_family(lora: LoraFile) -> str | None:
    """The family from the metadata, else from the key names and widths (cross-attention, Flux's feed-forward)."""
    fam = lora.family_from_metadata()
    if fam:
        return fam
    names = list(lora.modules)
    if any(n.startswith(("lora_te2_", "lora_te1_", "text_encoder_2.")) for n in names):
        return "sdxl"
    for spec in families.all_families():  # FLUX.2 klein's diffusers names
        if spec.lora_marks and any(mark in n for n in names for mark in spec.lora_marks):
            return spec.name
    for n, mod in lora.modules.items():  # BFL names: the feed-forward's width tells Flux.1 from FLUX.2
        if re.search(r"double_blocks[._]\d+[._]img_mlp[._]0$", n) and {"up", "down"} <= set(mod.tensors):
            ratio = mod.tensors["up"].shape[0] / mod.tensors["down"].shape[1]
            fam = next((f.name for f in families.all_families() if f.bfl_mlp_ratio == ratio), None)
            if fam:
                return fam
    if any(n.startswith("transformer.") or "double_blocks" in n or "single_blocks" in n
           or "single_transformer_blocks" in n for n in names):
        return "flux"
    for n, mod in lora.modules.items():
        if re.search(r"attn2[._]to_k$", n) and "down" in mod.tensors:
            width = int(mod.tensors["down"].shape[1])
            fam = next((f.name for f in families.all_families() if f.cross_attention_width == width), None)
            if fam:
                return fam
    if any("input_blocks" in n or "output_blocks" in n for n in names):
        return "sdxl"  # sgm names without cross-attention modules: SDXL is the family written that way
    if any(n.startswith(("lora_unet_", "unet.", "lora_te_")) for n in names):
        return "sd15"
    return None
