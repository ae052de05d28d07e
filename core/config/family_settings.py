"""The family-only settings of the schema, as the families declare them (core/families): which families each one
is for, the warning when one is set for a family that does not use it, and why LyCORIS is refused for some."""
from __future__ import annotations

from typing import Any

from .. import families


def no_lycoris(family: str) -> str:
    """Why network_type loha / lokr is refused for a family whose LoRAs are saved in the diffusers form."""
    title = families.title(family)
    return (f"network_type loha / lokr is not available for {title}: {title} LoRAs are saved with diffusers key names, "
            f"which diffusers loads only as plain LoRA, so no LyCORIS file would load everywhere a {title} LoRA does. "
            f"Use network_type = \"lora\" for {title}.")


def unused_settings(cfg: Any, family: str) -> str:
    """A warning naming the family-only settings of `cfg` changed from their defaults that `family` does not use
    ('' when there are none): they are ignored, and the user should know."""
    fields = type(cfg).model_fields
    names = [n for n in fields if family not in (used := families.using(n)) and used
             and getattr(cfg, n) != fields[n].default]
    if not names:
        return ""
    for_whom = sorted({f for n in names for f in families.using(n)}, key=families.names().index)
    one = len(names) == 1
    return (f"{', '.join(names)} {'does' if one else 'do'} not apply to {families.title(family)} "
            f"({'it is' if one else 'they are'} for {' / '.join(families.title(f) for f in for_whom)}) and "
            f"{'is' if one else 'are'} ignored. Set {'it' if one else 'them'} back to the default to silence this.")


def mark_family_fields(model: Any) -> None:
    """Each family-only setting of the pydantic `model` says which families use it, for the GUI and the docs."""
    for name, info in model.model_fields.items():
        used_by = families.using(name)
        if used_by:
            info.json_schema_extra["families"] = list(used_by)
    unknown = {f for spec in families.all_families() for f in spec.fields} - set(model.model_fields)
    if unknown:
        raise RuntimeError(f"core/families names settings the schema does not have: {', '.join(sorted(unknown))}")
