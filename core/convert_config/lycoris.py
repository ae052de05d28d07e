"""LyCORIS network types: kohya_ss's LoRA_type "LyCORIS/LoHa" / "LyCORIS/LoKr" / LoCon kinds and sd-scripts'
`network_module = "lycoris.kohya"` + `network_args = ["algo=lokr", "factor=8", ...]` -> network_type and its options
(factor, decompose_both, use_tucker); the kinds we do not train are reported with the reason."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .coerce import off, same, to_float

if TYPE_CHECKING:
    from .converter import Converter

GUI_KINDS = {"LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr"}
ALGOS = ("loha", "lokr")
_STANDARD = ": converted as a standard LoRA with the same network_dim / network_alpha"
UNSUPPORTED = {  # LoRA_type (without "LyCORIS/" / "Kohya ") or LyCORIS algo, lower case -> why
    "ia3": "(IA)^3 learns per-channel scales, not a weight change, and is not supported",
    "dylora": "DyLoRA (training every rank at once) is not supported",
    "glora": "GLoRA is not supported",
    "boft": "OFT kinds (orthogonal fine-tuning) are not supported",
    "diag-oft": "OFT kinds (orthogonal fine-tuning) are not supported",
    "oft": "OFT kinds (orthogonal fine-tuning) are not supported",
    "native fine-tuning": "full fine-tuning (no low-rank network) is not supported",
    "full": "full fine-tuning (no low-rank network) is not supported",
}
FLUX_WHY = "LoHa / LoKr are not trained for Flux here (a Flux LyCORIS file would not load in diffusers)"
LOKR_FULL_DIM = 1024  # our largest network_dim; LoKr factors at this rank are full matrices in SD1.5 / SDXL layers
LOKR_FULL_CONV = 512  # our largest conv_dim


def unsupported_reason(kind: str, flux: bool = False) -> str:
    k = kind.lower()
    for prefix in ("lycoris/", "kohya "):
        k = k[len(prefix):] if k.startswith(prefix) else k
    if flux and k in ALGOS:
        return FLUX_WHY + _STANDARD
    return UNSUPPORTED.get(k, "not supported") + _STANDARD


def _on(v: Any) -> bool:
    return not off(v)


def options(cv: Converter, kind: str, args: dict[str, str] | None) -> None:
    """factor / decompose_both / use_tucker (use_cp: its older name) from the GUI keys (args None) or network_args;
    popped / taken so that nothing else reports them."""
    def get(key: str):
        if args is None:
            return (key, cv.take(key)) if cv.has(key) else None
        return (f"network_args {key}", args.pop(key)) if key in args else None

    def left_out(src: str) -> None:
        cv.ignore(src) if args is None else cv.c.ignored.append(src)

    for key in ("factor", "decompose_both"):
        got = get(key)
        if got is None:
            continue
        src, v = got
        default = same(v, -1) if key == "factor" else off(v)
        if kind == "lokr" and not default:
            if cv.put(key, v, src):  # checked with network_type by the final validation
                cv.note(f"{src} = {v} -> {key} = {cv.out[key]}")
        elif default or args is None:  # the default, or a GUI field kohya_ss passes for LoKr only
            left_out(src)
        else:
            cv.unmapped(src, v, f"{key} belongs to LyCORIS LoKr, not {kind}")
    tucker, cp = get("use_tucker"), get("use_cp")
    chosen = tucker or cp
    if tucker and cp:  # kohya_ss passes use_tucker; use_cp is its older name, left in old presets
        left_out(cp[0])
        if _on(cp[1]) and not _on(tucker[1]):
            cv.note(f"{cp[0]} = {cp[1]} left out: it is the older name of use_tucker, and kohya_ss passes "
                    f"{tucker[0]} = {tucker[1]}")
    if chosen and _on(chosen[1]) and kind in ALGOS:
        if cv.put("use_tucker", True, chosen[0]):
            cv.note(f"{chosen[0]} = {chosen[1]} -> use_tucker = true (Tucker cores for the 3x3 convolutions)")
    elif chosen and _on(chosen[1]):
        cv.unmapped(chosen[0], chosen[1], f"Tucker decomposition is trained for network_type loha / lokr, not {kind}")
    elif chosen:
        left_out(chosen[0])
    got = get("rank_dropout_scale")
    if got and kind in ALGOS:
        src, v = got
        if _on(v):
            left_out(src)
            cv.note(f"{src} = true: the rows rank_dropout keeps are scaled up, as trained here")
        elif off(cv.src.get("rank_dropout")) and (args is None or off(args.get("rank_dropout"))):
            left_out(src)
        else:
            cv.unmapped(src, v, "here rank_dropout always scales the kept rows up")
    elif got:
        cv.unmapped(got[0], got[1], "LyCORIS option, not supported")


def finish(cv: Converter, kind: str) -> None:
    """After the network step: LoKr's "full matrix" ranks, and the settings LoHa / LoKr are not trained with."""
    if kind not in ALGOS:
        return
    if kind == "lokr" and cv.has("network_dim"):
        v = cv.take("network_dim")
        try:
            big = to_float(v) > LOKR_FULL_DIM
        except Exception:
            big = False
        if big:
            cv.put("network_dim", LOKR_FULL_DIM, "network_dim")
            cv.note(f"network_dim = {v} (LyCORIS LoKr's way of asking for full matrices) -> network_dim = "
                    f"{LOKR_FULL_DIM}: at that rank the Kronecker factors of SD1.5 / SDXL layers are full matrices "
                    "too, trained at scale 1 as in LyCORIS (network_alpha is then unused)")
        else:
            cv.put("network_dim", v, "network_dim")
    conv = cv.out.get("conv_dim")
    if kind == "lokr" and isinstance(conv, int) and conv > LOKR_FULL_CONV:
        cv.out["conv_dim"] = LOKR_FULL_CONV
        cv.note(f"conv_dim = {conv} (LyCORIS LoKr's full matrices) -> conv_dim = {LOKR_FULL_CONV}, full matrices "
                "for the convolutions as well")
    no_dropout = "LoHa / LoKr have no input dropout here (rank_dropout and module_dropout are)"
    if "network_dropout" in cv.out and _on(cv.out["network_dropout"]):
        src = cv.origin.get("network_dropout", "network_dropout")
        cv.unmapped(src, cv.out.pop("network_dropout"), no_dropout)
    if cv.has("network_dropout") and "network_dropout" not in cv.used:
        cv.refuse_unless_off("network_dropout", no_dropout)
    if cv.out.get("use_dora"):
        src = cv.origin.get("use_dora", "use_dora")
        cv.out.pop("use_dora")
        cv.unmapped(src, True, "DoRA is trained with network_type lora / locon only, not with LoHa / LoKr")
