"""Which layers get a LoRA, and putting it there with peft."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

ADAPTER = "default"
UNET_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
UNET_FF = ("ff.net.0.proj", "ff.net.2")
UNET_PROJ = ("proj_in", "proj_out")
UNET_CONV = re.compile(r".*(resnets\.\d+\.(conv1|conv2|conv_shortcut)|downsamplers\.0\.conv|upsamplers\.0\.conv)$")
TE_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


@dataclass(frozen=True)
class NetworkSpec:
    dim: int
    alpha: float
    dropout: float = 0.0
    ff: bool = False
    proj: bool = False
    conv_dim: int = 0
    conv_alpha: float = 1.0
    dora: bool = False
    layers: str = "all"  # Flux: "all" Linear layers of the blocks or "attention" only
    rank_dropout: float = 0.0  # sd-scripts' rank_dropout / module_dropout (core/lora/dropout.py), training only
    module_dropout: float = 0.0
    kind: str = "lora"  # network_type: lora / locon (peft LoRA), loha / lokr (peft LoHa / LoKr, core/lora/lycoris.py)
    factor: int = -1  # LoKr
    decompose_both: bool = False  # LoKr
    use_tucker: bool = False  # LoHa / LoKr: Tucker core for k x k convolutions

    @classmethod
    def from_config(cls, cfg) -> "NetworkSpec":
        return cls(cfg.network_dim, cfg.network_alpha, cfg.network_dropout, cfg.lora_ff, cfg.lora_proj,
                   cfg.conv_dim, cfg.conv_alpha, cfg.use_dora, cfg.flux_lora_layers, cfg.rank_dropout,
                   cfg.module_dropout, cfg.network_type, cfg.factor, cfg.decompose_both, cfg.use_tucker)

    @property
    def lycoris(self) -> bool:
        return self.kind in ("loha", "lokr")


def _ends_with(name: str, suffixes: tuple[str, ...]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def unet_targets(unet: nn.Module, spec: NetworkSpec) -> tuple[list[str], list[str]]:
    """(linear-like module names at network_dim, conv module names at conv_dim)."""
    suffixes = UNET_ATTN + (UNET_FF if spec.ff else ()) + (UNET_PROJ if spec.proj else ())
    main, conv = [], []
    for name, mod in unet.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            continue
        if _ends_with(name, suffixes) and (".attentions." in name or name.startswith("attentions")):
            main.append(name)
        elif spec.conv_dim > 0 and isinstance(mod, nn.Conv2d) and UNET_CONV.match(name):
            conv.append(name)
    return main, conv


def text_encoder_targets(te: nn.Module) -> list[str]:
    return [n for n, m in te.named_modules() if isinstance(m, nn.Linear) and _ends_with(n, TE_LAYERS)]


def lora_config(spec: NetworkSpec, main: list[str], conv: list[str]):
    rank_pattern = {re.escape(n): spec.conv_dim for n in conv}
    alpha_pattern = {re.escape(n): spec.conv_alpha for n in conv}
    if spec.lycoris:
        from .lycoris import lycoris_config

        return lycoris_config(spec, main + conv, rank_pattern, alpha_pattern)
    from peft import LoraConfig

    return LoraConfig(
        r=spec.dim, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=main + conv,
        rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, use_dora=spec.dora, init_lora_weights=True,
    )


def inject(model: nn.Module, spec: NetworkSpec, targets: tuple[list[str], list[str]]) -> list[nn.Parameter]:
    """Add LoRA layers to `model` in place (peft's own API) and return the trainable parameters, in fp32."""
    from peft import inject_adapter_in_model

    main, conv = targets
    if not main and not conv:
        raise ValueError(f"No layers to train were found in {type(model).__name__}.")
    inject_adapter_in_model(lora_config(spec, main, conv), model, adapter_name=ADAPTER)
    if spec.lycoris:
        from .lycoris import after_inject

        after_inject(model)  # peft's LoHa / LoKr do rank and module dropout themselves
    else:
        from .dropout import install

        install(model, spec.rank_dropout, spec.module_dropout)
    params = []
    for name, p in model.named_parameters():
        if is_adapter_param(name):
            p.data = p.data.float()  # LoRA weights stay fp32 whatever the base precision
            p.requires_grad_(True)
            params.append(p)
        else:
            p.requires_grad_(False)
    return params


ADAPTER_MARKS = ("lora_", "hada_", "lokr_")  # peft's LoRA, LoHa and LoKr parameter names


def is_adapter_param(name: str) -> bool:
    return any(m in name for m in ADAPTER_MARKS)


def module_alphas(spec: NetworkSpec, conv: list[str]) -> dict[str, tuple[int, float]]:
    """(rank, alpha) of every conv module that differs from the network default."""
    return {n: (spec.conv_dim, spec.conv_alpha) for n in conv}


def lora_scales(peft_sd: dict[str, torch.Tensor], spec: NetworkSpec, conv: list[str]) -> dict[str, float]:
    """alpha / rank of every module in a peft state dict (the factor the loaders apply)."""
    scales = {}
    for k in peft_sd:
        if k.endswith(".lora_B.weight"):
            m = k[: -len(".lora_B.weight")]
            scales[m] = (spec.conv_alpha / spec.conv_dim) if m in conv else spec.alpha / spec.dim
    return scales


def peft_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def load_peft_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Copy saved LoRA weights into the live parameters in place, so optimizers keep pointing at them."""
    params = {n.replace(f".{ADAPTER}", ""): p for n, p in model.named_parameters() if is_adapter_param(n)}
    missing = sorted(set(params) - set(sd))
    unexpected = sorted(set(sd) - set(params))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ValueError(f"the saved LoRA state does not match this network ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys, e.g. {example})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(sd[name].to(p.device, p.dtype))
