"""The Training tab's preset picker: the Preset list narrowed by model family (the base model's once it is known)
and GPU memory, so a beginner finds theirs among the table's presets; the hand-made ones fitting that choice, the
CPU demo and the user's own stay listed. The filtering is core.config.presets.filter_presets; this is the wiring."""
from __future__ import annotations

from typing import Any

import gradio as gr

from core.config import presets as presets_mod
from core.config.recipes import FAMILIES, TIERS

ALL, ANY = "all", "any"
FAMILY_FILTER = [("All", ALL)] + [(f.label, f.name) for f in FAMILIES.values()]
VRAM_FILTER = [("Any size", ANY)] + [(f"{t} GB", str(t)) for t in TIERS]
PRESET_INFO = ("Sets proven values for a kind of LoRA and the other settings back to their defaults; your model, "
               "folders, names, trigger word and sample prompts stay.")


def family_filter(family: str | None) -> str:
    """The family filter for a base model's family: that family where the table has presets for it, else All."""
    return family if family in FAMILIES else ALL


def preset_labels(family: str | None = ALL, vram: str | None = ANY, current: str | None = None) -> list[str]:
    """The labels listed for these filters, in their order; the chosen preset stays listed (the guardrails still
    compare its family with the base model's) even when the filters leave it out."""
    fam = family if family in FAMILIES else None
    gb = int(vram) if vram and str(vram).isdigit() else None
    out = [p.label for p in presets_mod.filter_presets(presets_mod.list_presets(), fam, gb)]
    return out + [current] if current and current not in out else out


class PresetPicker:
    def build(self, value: str | None, family: str | None) -> None:
        """The two filters above the Preset list and the chosen preset's description below it."""
        with gr.Group(elem_id="preset-picker"):
            with gr.Row(equal_height=True):
                self.family = gr.Radio(FAMILY_FILTER, value=family_filter(family), label="Presets for",
                                       elem_id="preset-family", scale=3,
                                       info="Follows the base model's family once it is known.")
                self.vram = gr.Dropdown(VRAM_FILTER, value=ANY, label="Made for a GPU with", elem_id="preset-vram",
                                        scale=2, info="The table's presets of that size, hand-made ones that fit.")
            self.dropdown = gr.Dropdown(choices=preset_labels(self.family.value, ANY, value), value=value,
                                        label="Preset", interactive=True, info=PRESET_INFO, elem_id="preset")
            self.desc = gr.Markdown("", elem_id="preset-desc")

    @property
    def filters(self) -> list[Any]:
        return [self.family, self.vram]

    def choices(self, family: str, vram: str, current: str | None, value: Any = None) -> Any:
        """An update of the Preset list for these filters (value: the chosen preset, `current` when None)."""
        return gr.update(choices=preset_labels(family, vram, value if value is not None else current),
                         value=value if value is not None else current)

    def wire(self, base_fields: list[Any]) -> None:
        """The list follows the filters; the family filter follows the base model (base_fields: its path and
        base_config_dir)."""
        from core.models.choose import describe_base

        def on_base(model: str, config_dir: str):
            fam = describe_base(model or "", config_dir or "")[0]
            return family_filter(fam) if fam else gr.skip()

        quiet = {"show_progress": "hidden", "queue": True}
        gr.on([f.change for f in self.filters], self.choices, self.filters + [self.dropdown], [self.dropdown],
              trigger_mode="always_last", **quiet)
        gr.on([c.change for c in base_fields], on_base, base_fields, [self.family], trigger_mode="always_last",
              **quiet)
