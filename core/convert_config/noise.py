"""sd-scripts' noise, loss and regularisation options (and kohya_ss's noise_offset_type) -> ours.

Our keys carry sd-scripts' names and meaning: noise_offset and multires noise are independent there and here.
kohya_ss's GUI has a noise_offset_type choice instead: "Original" passes noise_offset, adaptive_noise_scale and
noise_offset_random_strength to sd-scripts and leaves the multires settings out; "Multires" the other way round
(kohya_gui/lora_gui.py). A GUI config is converted to what kohya_ss would have run. kohya_ss writes 0 for "off";
options that are off are not written.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .coerce import blank, off, same
from .flux import NOT_FOR_FLUX
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter

OFFSET_KEYS = ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
MULTIRES_KEYS = ("multires_noise_iterations", "multires_noise_discount")
SD_ONLY = OFFSET_KEYS + MULTIRES_KEYS + ("debiased_estimation_loss", "min_timestep", "max_timestep")
ALL_FAMILIES = ("ip_noise_gamma", "ip_noise_gamma_random_strength", "scale_weight_norms", "rank_dropout",
                "module_dropout")
KEYS = SD_ONLY + ALL_FAMILIES


def _noise_offset_type(cv: Converter) -> str | None:
    """kohya_ss's choice, or None (an sd-scripts file: every key counts). Keys the choice leaves out are noted."""
    if not cv.has("noise_offset_type"):
        return None
    v = cv.take("noise_offset_type")
    kind = "Original" if blank(v) else str(v).strip()
    if kind not in ("Original", "Multires"):
        cv.unmapped("noise_offset_type", v, "kohya_ss knows \"Original\" and \"Multires\": converted as \"Original\"")
        kind = "Original"
    dropped = MULTIRES_KEYS if kind == "Original" else OFFSET_KEYS
    unused = [k for k in dropped if k in cv.src and not off(cv.src[k]) and k not in cv.used
              and not (k == "multires_noise_discount" and off(cv.src.get("multires_noise_iterations")))]
    for k in dropped:
        if k in cv.src and k not in cv.used:
            cv.ignore(k)
    if kind == "Original" or cv.flux:  # Flux: the multires settings are reported as not for Flux
        cv.ignore("noise_offset_type")
    if unused:
        cv.note(f"noise_offset_type = \"{kind}\": kohya_ss does not pass "
                + ", ".join(f"{k} = {fmt(k, cv.src[k])}" for k in unused) + " to sd-scripts then, so "
                + ("they are" if len(unused) > 1 else "it is") + " left out")
    elif kind == "Multires" and not cv.flux:
        cv.used.add("noise_offset_type")
        cv.note("noise_offset_type = \"Multires\" -> multires_noise_iterations / multires_noise_discount "
                "(noise_offset is independent here, as in sd-scripts)")
    return kind


def _value(cv: Converter, key: str) -> Any:
    """The source value of a key still to convert, or None when it is absent, taken already, or off (then ignored)."""
    if key not in cv.src or key in cv.used:
        return None
    v = cv.take(key)
    if off(v):
        cv.ignore(key)
        return None
    return v


def step_noise(cv: Converter) -> None:
    _noise_offset_type(cv)
    if cv.flux:
        for key in SD_ONLY:
            if key not in cv.src or key in cv.used:
                continue
            v = cv.take(key)
            needs = {"multires_noise_discount": "multires_noise_iterations", "adaptive_noise_scale": "noise_offset",
                     "noise_offset_random_strength": "noise_offset"}.get(key)
            if off(v) or (key == "max_timestep" and same(v, 1000)) or (needs and off(cv.src.get(needs))):
                cv.ignore(key)
            else:
                cv.unmapped(key, v, f"{key} {NOT_FOR_FLUX}")
    else:
        _sd_options(cv)
    for key, needs in (("ip_noise_gamma", None), ("ip_noise_gamma_random_strength", "ip_noise_gamma"),
                       ("scale_weight_norms", None), ("rank_dropout", None), ("module_dropout", None)):
        v = _value(cv, key)
        if v is None:
            continue
        if key in cv.out:  # rank_dropout / module_dropout from network_args already
            cv.unmapped(key, v, f"{key} is already set from {cv.origin.get(key)}")
        elif needs and needs not in cv.out:
            cv.ignore(key)  # no effect without it
        else:
            cv.put_checked(key, v, key)


def _sd_options(cv: Converter) -> None:
    offset = _value(cv, "noise_offset")
    if offset is not None:
        cv.put_checked("noise_offset", offset)
    adaptive = _value(cv, "adaptive_noise_scale")
    if adaptive is not None:
        if "noise_offset" in cv.out:
            cv.put("adaptive_noise_scale", adaptive)  # checked with noise_offset by the last step
        else:
            cv.unmapped("adaptive_noise_scale", adaptive, "needs noise_offset, which is off (sd-scripts refuses "
                                                          "adaptive_noise_scale without it)")
    strength = _value(cv, "noise_offset_random_strength")
    if strength is not None:
        if "noise_offset" in cv.out:
            cv.put_checked("noise_offset_random_strength", strength)
        else:
            cv.ignore("noise_offset_random_strength")
    iterations = _value(cv, "multires_noise_iterations")
    if iterations is not None:
        cv.put_checked("multires_noise_iterations", iterations)
    if "multires_noise_discount" in cv.src and "multires_noise_discount" not in cv.used:
        discount = cv.take("multires_noise_discount")
        if "multires_noise_iterations" in cv.out and not blank(discount):
            cv.put_checked("multires_noise_discount", discount)  # 0 is a real discount here
        else:
            cv.ignore("multires_noise_discount")
    if _value(cv, "debiased_estimation_loss") is not None:
        if cv.flag("debiased_estimation_loss"):
            cv.put("debiased_estimation_loss", True)
        else:
            cv.ignore("debiased_estimation_loss")
    lo = _value(cv, "min_timestep")
    if lo is not None:
        cv.put_checked("min_timestep", lo)
    hi = _value(cv, "max_timestep")  # kohya_ss: 0 = not set; 1000 = all timesteps, our default
    if hi is not None and same(hi, 1000):
        cv.ignore("max_timestep")
    elif hi is not None:
        cv.put_checked("max_timestep", hi)
