"""Model family (sdxl / v2 / Flux flags) and network type (LoRA_type, network_module, network_args)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .args import split_args
from .coerce import blank, off, same
from .flux import NO_CONV, NOT_FOR_FLUX, flux_network_option, flux_source
from .keys import GUI_DEFAULTS, LYCORIS_KEYS
from . import lycoris as lyc
from .reasons import REASONS
from .values import LYCORIS_LOCON_TYPES

if TYPE_CHECKING:
    from .converter import Converter


def step_model(cv: Converter) -> None:
    """sdxl / v2 flags -> model_family; Flux.1 (GUI checkbox or LoRA_type, sd-scripts' Flux options) -> "flux";
    SD3 is reported as not supported."""
    sdxl, v2 = cv.flag("sdxl"), cv.flag("v2")
    flux_why = flux_source(cv)
    sd3 = cv.flag("sd3_checkbox")
    for key in ("sdxl", "v2", "flux1_checkbox", "sd3_checkbox"):
        if key in cv.src and not cv.flag(key):
            cv.ignore(key)
    if flux_why and sdxl:  # kohya_ss runs sdxl_train_network.py then
        if cv.flag("flux1_checkbox"):
            cv.unmapped("flux1_checkbox", True, "sdxl = true as well: kohya_ss then trains SDXL, so this is "
                                                "converted as SDXL")
        flux_why = None
    if sd3:
        cv.unmapped("sd3_checkbox", True, "flux1_checkbox = true wins: kohya_ss then trains Flux.1" if flux_why else
                    "SD3 models are not supported (SD1.5, SD2, SDXL and Flux.1 are)")
    if sdxl:
        cv.put("model_family", "sdxl", "sdxl")
        cv.note("sdxl = true -> model_family = \"sdxl\"")
    elif flux_why:
        src = flux_why.split(" ")[0]
        cv.put("model_family", "flux", src if src in cv.src else None)
        cv.note(f"{flux_why} -> model_family = \"flux\"")
    elif v2:
        cv.put("model_family", "sd2", "v2")
        cv.note("v2 = true -> model_family = \"sd2\"")
    cv.flux = bool(flux_why)
    cv.flux_sd3 = sd3 and not cv.flux
    if cv.has("v_parameterization"):
        v = cv.take("v_parameterization")
        if not cv.flux:
            cv.put("v_parameterization", v)
        elif off(v):
            cv.ignore("v_parameterization")
        else:
            cv.unmapped("v_parameterization", v, f"v_parameterization {NOT_FOR_FLUX}")
    if "sdxl_cache_text_encoder_outputs" in cv.src:  # GUI: SDXL text-encoder caching has its own checkbox
        v = cv.take("sdxl_cache_text_encoder_outputs")
        if sdxl and not off(v) and "cache_text_encoder_outputs" not in cv.src:
            cv.put("cache_text_encoder_outputs", v, "sdxl_cache_text_encoder_outputs")
            cv.note("sdxl_cache_text_encoder_outputs = true -> cache_text_encoder_outputs = true")
        else:
            cv.ignore("sdxl_cache_text_encoder_outputs")
    if "sdxl_no_half_vae" in cv.src and not sdxl:
        cv.ignore("sdxl_no_half_vae")


def step_network(cv: Converter) -> None:
    """LoRA_type (GUI), network_module and network_args -> network_type (LoRA, LoCon with conv_dim, LyCORIS LoHa /
    LoKr and their options), DoRA, dropout."""
    lora_type = cv.take("LoRA_type")
    module = cv.take("network_module")
    raw_args = cv.take("network_args")
    args: dict[str, str] = {}
    items = split_args(raw_args) if isinstance(raw_args, str) else list(raw_args or [])
    for item in items:
        k, eq, v = str(item).partition("=")
        if not eq:
            cv.unmapped(f"network_args {item}", item, "not key=value")
            continue
        args[k.strip()] = v.strip()
    conv_from_keys = False
    lycoris = False
    kind = "lora"  # the network_type this becomes
    other_network = ""  # a network type we cannot train: its conv settings are not ours either
    if cv.gui:
        lt = "Standard" if blank(lora_type) else str(lora_type)
        lycoris = lt.startswith("LyCORIS") or lt == "LoCon"
        if lt == "Standard":
            cv.ignore("LoRA_type")
            for key in ("conv_dim", "conv_alpha"):
                cv.ignore(key)
        elif lt == "Kohya LoCon":
            conv_from_keys, kind = True, "locon"
            cv.note("LoRA_type = \"Kohya LoCon\" -> network_type = \"locon\" with conv_dim / conv_alpha (LoRA on the "
                    "convolution layers too)")
        elif lt in LYCORIS_LOCON_TYPES:
            conv_from_keys, kind = True, "locon"
            cv.note(f"LoRA_type = \"{lt}\" -> network_type = \"locon\" with conv_dim / conv_alpha (the same network; "
                    "the file uses kohya's key names, lora_down / lora_up, which LyCORIS' LoCon uses too)")
        elif lt in lyc.GUI_KINDS and not cv.flux:
            conv_from_keys, kind = True, lyc.GUI_KINDS[lt]
            cv.put("network_type", kind, "LoRA_type")
            cv.note(f"LoRA_type = \"{lt}\" -> network_type = \"{kind}\" (LyCORIS keys, trained through peft)")
        elif lt.startswith("Flux"):
            if lt == "Flux1" and cv.flux:
                cv.note("LoRA_type = \"Flux1\": kohya's Flux LoRA (networks.lora_flux), as trained here")
            elif lt == "Flux1 OFT":
                cv.unmapped("LoRA_type", lt, "OFT is not supported: converted as a standard LoRA with the same "
                                             "network_dim / network_alpha")
            else:
                cv.unmapped("LoRA_type", lt, "a Flux LoRA type, but the config is not converted as a Flux one"
                            if not cv.flux else "not supported: converted as a standard LoRA with the same "
                                                "network_dim / network_alpha")
            for key in ("conv_dim", "conv_alpha"):  # kohya_ss does not pass them for Flux
                cv.ignore(key)
        else:
            cv.unmapped("LoRA_type", lt, lyc.unsupported_reason(lt, cv.flux))
            for key in ("conv_dim", "conv_alpha"):
                v = cv.take(key)
                if key in cv.src and not off(v) and not same(v, 1):
                    cv.unmapped(key, v, f"belongs to LoRA_type {lt}")
                else:
                    cv.ignore(key)
        if lycoris and kind != "lora":  # LoHa / LoKr options, or LyCORIS LoCon's (Tucker: not trained here)
            lyc.options(cv, kind, None)
        for key in LYCORIS_KEYS:
            if key not in cv.src or key in cv.used:
                continue
            v = cv.take(key)
            if not lycoris or off(v) or (key in GUI_DEFAULTS and same(v, GUI_DEFAULTS[key])):
                cv.ignore(key)
            else:
                cv.unmapped(key, v, "LyCORIS option, not supported")
    elif not blank(lora_type):
        cv.unmapped("LoRA_type", lora_type)
    if conv_from_keys and cv.flux:
        dim = cv.take("conv_dim")
        for key in ("conv_dim", "conv_alpha"):
            v = cv.take(key)
            if off(dim) or off(v):
                cv.ignore(key)
            else:
                cv.unmapped(key, v, NO_CONV)
    elif conv_from_keys:
        dim = cv.take("conv_dim")
        if not off(dim):
            cv.put("conv_dim", dim)
            alpha = cv.take("conv_alpha")
            if not off(alpha):
                cv.put("conv_alpha", alpha)
            else:
                cv.ignore("conv_alpha")
        else:
            cv.ignore("conv_dim")
            cv.ignore("conv_alpha")
    if not blank(module):
        m = str(module).strip()
        if m == "networks.lora":
            cv.note("network_module = \"networks.lora\": kohya's standard LoRA, as trained here")
        elif m == "networks.lora_flux" and cv.flux:
            cv.note("network_module = \"networks.lora_flux\": kohya's Flux LoRA, as trained here")
        elif m == "networks.oft_flux":
            other_network = "OFT"
            cv.unmapped("network_module", m, "OFT is not supported: converted as a standard LoRA with the same "
                                             "network_dim / network_alpha")
        elif m == "lycoris.kohya":
            algo = args.pop("algo", "lora").lower()
            if algo in ("lora", "locon"):
                kind = "locon"  # network_type locon once conv_dim is set, else a plain LoRA
                cv.note(f"network_module = \"lycoris.kohya\" (algo {algo}) -> kohya-style LoRA"
                        + (" with conv_dim / conv_alpha" if "conv_dim" in args else "")
                        + " (nearest: the same idea; the file uses kohya's key names)")
            elif algo in lyc.ALGOS and not cv.flux:
                kind = algo
                cv.put("network_type", kind, "network_args algo")
                cv.note(f"network_module = \"lycoris.kohya\" (algo {algo}) -> network_type = \"{algo}\"")
                lyc.options(cv, kind, args)
            else:
                other_network = f"LyCORIS algo {algo}"
                cv.unmapped("network_module", f"{m} (algo={algo})", lyc.unsupported_reason(algo, cv.flux))
            if str(args.get("preset", "full")).lower() == "full":
                args.pop("preset", None)
        else:
            other_network = m
            cv.unmapped("network_module", m, "only networks.lora is supported: converted as a standard LoRA "
                                             "with the same network_dim / network_alpha")
    else:
        cv.ignore("network_module")
    if cv.flux:
        for k in ("conv_dim", "conv_rank", "conv_alpha"):
            if k in args:
                cv.unmapped(f"network_args {k}", args.pop(k), NO_CONV)
        for k in list(args):
            if flux_network_option(cv, k, args[k], f"network_args {k}"):
                args.pop(k)
    if other_network:
        for k in ("conv_dim", "conv_rank", "conv_alpha"):
            if k in args:
                cv.unmapped(f"network_args {k}", args.pop(k), f"belongs to {other_network}")
    if "conv_dim" in args or "conv_rank" in args:
        dim = args.pop("conv_dim", None) or args.pop("conv_rank", None)
        if cv.put("conv_dim", dim, "network_args conv_dim"):
            cv.note(f"network_args conv_dim={dim} -> conv_dim = {cv.out['conv_dim']}")
        if "conv_alpha" in args:
            alpha = args.pop("conv_alpha")
            if cv.put("conv_alpha", alpha, "network_args conv_alpha"):
                cv.note(f"network_args conv_alpha={alpha} -> conv_alpha = {cv.out['conv_alpha']}")
    elif "conv_alpha" in args:
        cv.unmapped("network_args conv_alpha", args.pop("conv_alpha"), "conv_alpha without conv_dim has no effect")
    if "dora_wd" in args:
        v = args.pop("dora_wd")
        if cv.put("use_dora", v, "network_args dora_wd") and cv.out["use_dora"]:
            cv.note("network_args dora_wd=True -> use_dora = true")
    if "dropout" in args:
        v = args.pop("dropout")
        if cv.put("network_dropout", v, "network_args dropout"):
            cv.note(f"network_args dropout={v} -> network_dropout")
    for key in ("rank_dropout", "module_dropout"):  # sd-scripts' networks.lora (and lora_flux) arguments
        if key in args:
            v = args.pop(key)
            if off(v):
                cv.c.ignored.append(f"network_args {key}")
            elif cv.put_checked(key, v, f"network_args {key}"):
                cv.note(f"network_args {key}={v} -> {key} = {cv.out[key]}")
    for k, v in args.items():
        if off(v):
            cv.c.ignored.append(f"network_args {k}")
        else:
            cv.unmapped(f"network_args {k}", v, REASONS.get(k, "network argument not supported"))
    # GUI DoRA checkbox (LyCORIS types)
    if "dora_wd" in cv.src:
        v = cv.take("dora_wd")
        if not off(v) and cv.put("use_dora", v, "dora_wd"):
            cv.note("dora_wd = true -> use_dora = true")
        else:
            cv.ignore("dora_wd")
    if cv.has("use_dora"):
        cv.put("use_dora", cv.take("use_dora"))
    if kind == "locon" and cv.out.get("conv_dim") and "network_type" not in cv.out:
        cv.put("network_type", "locon", "LoRA_type" if cv.gui else "network_args algo")
    lyc.finish(cv, kind)
