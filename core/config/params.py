"""How one training parameter is declared (torch-free, no other module of the project): the GUI groups and
:func:`param`. The schema (core/config/schema.py) declares the settings every family shares; a family declares its
own (core/families, `FamilySpec.settings`) with the same function, and the schema adds them."""
from __future__ import annotations

from typing import Any

from pydantic import Field

GROUPS: dict[str, str] = {
    "model": "Base model",
    "data": "Dataset and captions",
    "output": "Output and saving",
    "network": "LoRA network",
    "optim": "Learning rate and optimizer",
    "train": "Training length and batches",
    "quality": "Loss and noise",
    "memory": "Speed and memory",
    "sample": "Sample images",
    "validation": "Validation and the best epoch",
    "flux": "Flux.1 / FLUX.2",
}


def param(default: Any, *, help: str, group: str, basic: bool = False, own: bool | None = None, **kw: Any) -> Any:
    """Declare one parameter: its default, help text, GUI group and level, plus pydantic limits. `own`: the user's
    own input (their model and its files, folders, names, words) that presets keep; the whole model group is.
    Which model families a parameter applies to is not said here: each family lists the family-only settings it
    uses (core/families), and the GUI shows those only for it."""
    assert group in GROUPS, group
    extra: dict[str, Any] = {"group": group, "basic": basic}
    if own if own is not None else group == "model":
        extra["own"] = True
    return Field(default, description=help, json_schema_extra=extra, **kw)
