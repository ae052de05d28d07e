"""Keys copied as they are, precision, learning rates, optimizer and attention."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..config.schema import TrainConfig
from .args import split_args
from .coerce import BadValue, blank, off, same, to_float
from .detect import SD_SCRIPTS
from .keys import DIRECT_RENAMES, SPECIAL
from .report import fmt
from .values import ADAMW_ARGS, MIXED_PRECISION_NAMES, OPTIMIZER_NEAR, OPTIMIZERS, PRODIGY_ARGS, SAVE_PRECISION_NAMES

if TYPE_CHECKING:
    from .converter import Converter


def step_direct(cv: Converter, all_fields: bool = False) -> None:
    """Keys with the same name and meaning here (and a few plain renames)."""
    for key in list(cv.src):
        if key in cv.used:
            continue
        ours = DIRECT_RENAMES.get(key, key)
        if ours not in TrainConfig.model_fields or (ours in SPECIAL and not all_fields):
            continue
        value = cv.take(key)
        if ours in cv.out and cv.origin.get(ours) != key:
            cv.unmapped(key, value, f"{ours} is already set from {cv.origin.get(ours)}")
            continue
        if blank(value):
            cv.ignore(key)
            continue
        if ours == "clip_skip" and cv.out.get("model_family") == "sdxl":
            if not same(value, 1) and not same(value, 0):
                cv.unmapped(key, value)
            else:
                cv.ignore(key)
            continue
        if ours == "clip_skip" and same(value, 0):
            cv.ignore(key)  # sd-scripts: None/0 = not set
            continue
        if cv.put(ours, value, key) and ours != key:
            cv.note(f"{key} = {fmt(key, value)} -> {ours} = {fmt(ours, cv.out[ours])}")
    if all_fields:
        return
    if "caption_prefix" in cv.src and "trigger_word" not in cv.out:
        v = cv.take("caption_prefix")
        word = str(v or "").strip().strip(",").strip()
        if word:
            cv.put("trigger_word", word, "caption_prefix")
            cv.note(f"caption_prefix = {fmt('x', v)} -> trigger_word = {fmt('x', word)} (nearest: the word "
                    "is added in front of captions that lack it)")
        else:
            cv.ignore("caption_prefix")


def step_precision(cv: Converter) -> None:
    """mixed_precision and save_precision, with their other spellings (fp32, float32) mapped to ours."""
    v = cv.take("mixed_precision")
    if not blank(v):
        s = str(v).strip().lower()
        mapped = MIXED_PRECISION_NAMES.get(s, s)
        if cv.put("mixed_precision", mapped) and mapped != str(v):
            cv.note(f"mixed_precision = {fmt('x', v)} -> \"{mapped}\"")
    elif cv.has("mixed_precision"):
        cv.ignore("mixed_precision")
    elif cv.c.kind == SD_SCRIPTS:
        cv.note("mixed_precision is not in the file (sd-scripts takes it from `accelerate config`): "
                "left at our default fp16")
    v = cv.take("save_precision")
    if not blank(v):
        s = str(v).strip().lower()
        mapped = SAVE_PRECISION_NAMES.get(s, s)
        if cv.put("save_precision", mapped) and mapped != str(v):
            cv.note(f"save_precision = {fmt('x', v)} -> \"{mapped}\"")
    else:
        cv.ignore("save_precision")


def step_learning_rates(cv: Converter) -> None:
    """learning_rate, unet_lr, text_encoder_lr; a rate of 0 means that part is not trained."""
    lr = cv.number("learning_rate")
    unet = cv.number("unet_lr")
    te_raw = cv.take("text_encoder_lr")
    te: float | None = None
    if isinstance(te_raw, (list, tuple)):
        vals = []
        for x in te_raw:
            try:
                vals.append(to_float(x))
            except BadValue:
                cv.c.invalid.append(f"text_encoder_lr = {fmt('x', te_raw)}: not a number")
        if vals:
            te = vals[0]
            if cv.flux and len(vals) > 1:
                cv.note(f"text_encoder_lr = {fmt('x', te_raw)} -> {te} for CLIP-L (the second rate is T5's; "
                        "T5 is never trained here)")
            elif len(set(vals)) > 1:
                cv.note(f"text_encoder_lr = {fmt('x', te_raw)} -> {te} for both text encoders "
                        "(separate rates per SDXL text encoder are not supported)")
    elif not blank(te_raw):
        try:
            te = to_float(te_raw)
        except BadValue as e:
            cv.c.invalid.append(f"text_encoder_lr = {fmt('x', te_raw)}: {e}")
    elif "text_encoder_lr" in cv.src:
        cv.ignore("text_encoder_lr")
    unet_only = cv.flag("network_train_unet_only")
    te_only = cv.flag("network_train_text_encoder_only")
    for key in ("network_train_unet_only", "network_train_text_encoder_only"):
        if key in cv.src and not cv.flag(key):
            cv.ignore(key)
    if te == 0 and unet == 0:
        cv.note("unet_lr = 0 and text_encoder_lr = 0: both use learning_rate")
        te = unet = None
    elif te == 0:
        unet_only = True
        te = None
        cv.note("text_encoder_lr = 0 -> network_train_unet_only = true (the text encoder is not trained)")
    elif unet == 0 and te is not None:
        te_only = True
        unet = None
        cv.note("unet_lr = 0 -> network_train_text_encoder_only = true (the UNet is not trained)")
    elif unet == 0:
        unet = None
        cv.ignore("unet_lr")
    if (lr is None or lr <= 0) and unet is not None and unet > 0 and (lr is not None or cv.gui):
        was = "empty" if lr is None else f"{lr:g}"
        cv.note(f"learning_rate = {was} -> {unet:g} (from unet_lr; here it is only the fallback rate)")
        lr = unet
    if lr is not None:
        cv.put("learning_rate", lr)
    if unet is not None:
        cv.put("unet_lr", unet)
    if te is not None:
        cv.put("text_encoder_lr", te)
    if unet_only:
        cv.put("network_train_unet_only", True)
    if te_only:
        cv.put("network_train_text_encoder_only", True)


def _arg_name(arg: str) -> str:
    """'weight_decay=0.01' -> 'weight_decay'."""
    return arg.split("=", 1)[0].strip()


def step_optimizer(cv: Converter) -> None:
    """optimizer / optimizer_type (or the old use_8bit_adam flags) and optimizer_args; others -> the nearest."""
    args_raw = cv.take("optimizer_args")
    args = split_args(args_raw) if isinstance(args_raw, str) else [str(a) for a in (args_raw or [])]
    if not args and "optimizer_args" in cv.src:
        cv.ignore("optimizer_args")
    key = "optimizer" if cv.has("optimizer") else "optimizer_type"
    name = cv.take(key)
    legacy = [k for k in ("use_8bit_adam", "use_lion_optimizer") if cv.has(k)]
    for k in legacy:
        if cv.flag(k):
            if blank(name):
                name, key = ("AdamW8bit" if k == "use_8bit_adam" else "Lion"), k
                cv.note(f"{k} = true -> optimizer_type = \"{name}\"")
            else:
                cv.c.ignored.append(k)
        else:
            cv.ignore(k)
    if blank(name):
        if cv.has(key):
            cv.ignore(key)
        if args:
            cv.put("optimizer_args", args, "optimizer_args")
        return
    text = str(name).strip()
    low = text.lower()
    short = low.rsplit(".", 1)[-1]  # "bitsandbytes.optim.AdamW8bit" -> "adamw8bit"
    if low in OPTIMIZERS or short in OPTIMIZERS:
        ours = OPTIMIZERS.get(low) or OPTIMIZERS[short]
        cv.put("optimizer_type", ours, key)
        if ours != text:
            cv.note(f"{key} = {fmt('x', text)} -> optimizer_type = \"{ours}\"")
    elif short in OPTIMIZER_NEAR:
        ours, extra, why = OPTIMIZER_NEAR[short]
        cv.put("optimizer_type", ours, key)
        allowed = PRODIGY_ARGS if ours == "Prodigy" else ADAMW_ARGS if ours == "AdamW" else None
        if allowed is not None and not short.startswith("paged"):
            kept = [a for a in args if _arg_name(a) in allowed]
            for a in args:
                if a not in kept:
                    cv.unmapped(f"optimizer_args {_arg_name(a)}", a, f"not accepted by {ours}")
            args = kept
        names = {_arg_name(a) for a in args}
        args += [e for e in extra if _arg_name(e) not in names]
        if short.startswith("sgdnesterov") and "momentum" not in names:
            args.append("momentum=0.9")  # sd-scripts' default for SGDNesterov
        added = [a for a in args if a in extra or a == "momentum=0.9" and short.startswith("sgdnesterov")]
        cv.note(f"{key} = {fmt('x', text)} -> optimizer_type = \"{ours}\" ({why})"
                + (f", optimizer_args + {', '.join(added)}" if added else ""))
    else:
        cv.unmapped(key, text, "optimizer not available here (AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, "
                               "Adafactor, SGD): left at AdamW; check learning_rate and optimizer_args")
    if args:
        cv.put("optimizer_args", args, "optimizer_args")
        if isinstance(args_raw, str):
            cv.note(f"optimizer_args = {fmt('x', args_raw)} -> {fmt('x', cv.out.get('optimizer_args'))}")


def step_attention(cv: Converter) -> None:
    """xformers / sdpa / mem_eff_attn -> sdpa (PyTorch's memory-efficient attention)."""
    chosen, plain, keys = [], [], []
    for key in ("xformers", "sdpa", "mem_eff_attn"):
        if key not in cv.src:
            continue
        v = cv.take(key)
        if isinstance(v, str) and v.strip().lower() in ("xformers", "sdpa"):
            chosen.append(f"{key} = \"{v.strip()}\"")
            keys.append(key)
        elif isinstance(v, str) and v.strip().lower() == "none":
            plain.append(f"{key} = \"none\"")
        elif not off(v):
            chosen.append(f"{key} = true")
            keys.append(key)
        else:
            cv.ignore(key)
    if chosen:
        cv.put("sdpa", True, keys[0])
        if chosen != ["sdpa = true"]:
            cv.note(f"{', '.join(chosen)} -> sdpa = true (PyTorch's built-in memory-efficient attention)")
    elif plain:
        cv.note(f"{', '.join(plain)} (plain attention): sdpa left on; it gives the same results, faster "
                "and with less memory")
