"""The Training tab's guided start and its live checks: subject, base model or family, dataset folder and VRAM
(detected or chosen) fill the form through core.config.guided; the VRAM estimate (core.estimate) and the guardrail
warnings (core.config.guardrails) follow every change of the form. The logic lives in core/; the plain functions
here turn its results into what the accordion shows, and the class lays it out and wires it."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from core.config.guided import AUTO, vram_choice
from core.config.recipes import FAMILIES, SUBJECTS, TIERS
from core.config.toml_io import ConfigError

from . import fit_view

SUBJECT_CHOICES = [(s.label, s.name) for s in SUBJECTS.values()]
FAMILY_CHOICES = [("From the base model", AUTO)] + [(f.label, f.name) for f in FAMILIES.values()]
VRAM_CHOICES = [("This computer's GPU", AUTO)] + [(f"{t} GB", str(t)) for t in TIERS]
INTRO = ("Tell it what the LoRA is of, the base model (or its family) and the dataset folder: it fills the form "
         "below for your GPU's memory (detected, or chosen here) and your number of images, and says why.")


# --------------------------------------------------------------------------- plain functions
def preset_of(label: str):
    """The preset of this label; None for none, or one that cannot be read."""
    from core.config.presets import find_preset

    try:
        return find_preset(label) if label else None
    except (KeyError, ConfigError):
        return None


def guided_fill(subject: str, model: str, family: str, data: str, vram: str, earlier: dict,
                form_data: dict[str, Any], model_folders: list[str]) -> tuple[Any, dict | None, dict | None, tuple]:
    """What "Fill in the form" does: (core.config.guided's result, the form's new values (the rest of the form back
    to its defaults) or None when it cannot fill, the user's own fields it filled in, the preset filters (family,
    VRAM) that list presets like it)."""
    from core.config.guided import guided_start
    from core.config.presets import fill_values, own_values_set
    from core.config.recipes import tier_for

    from .preset_picker import ANY, family_filter

    g = guided_start(subject or "character", model or "", family, data or "", vram, model_folders=model_folders)
    if not g.ok:
        return g, None, None, ()
    fill = fill_values(g.values, form_data, earlier)
    typed = ("pretrained_model_name_or_path", "train_data_dir")  # this box's own inputs
    tier = tier_for(g.vram_gb) if g.vram_gb else None
    return g, fill, own_values_set(g.values, typed), (family_filter(g.family), str(tier) if tier else ANY)


def checks_html(cfg, label: str, subject: str, family: str, vram: str) -> tuple[str, str]:
    """The VRAM estimate and the guardrail warnings for the form's config, the chosen preset, subject, family and
    VRAM choice."""
    from core.config.guardrails import base_family, check
    from core.config.guided import detect_gpu, fit_check

    fam = base_family(cfg) or (family if family != AUTO else None)
    gpu = detect_gpu()
    gb, source = vram_choice(vram, gpu)
    try:
        est = fit_check(cfg, fam, gb)
        problem = ""
    except (ValueError, ConfigError, OSError) as e:
        est, problem = None, str(e)
    pr = preset_of(label)
    items = check(cfg, family=fam, preset_family=pr.family if pr else None, subject=subject,
                  cuda=gpu.vram_gb is not None if vram == AUTO else None)
    return fit_view.estimate_html(est, gb, source, problem), fit_view.guardrails_html(items)


# --------------------------------------------------------------------------- the accordion
class GuidedStart:
    def __init__(self, model_choices: Callable[[], list], model_folders: Callable[[], list[str]] = list) -> None:
        self.model_choices = model_choices
        self.model_folders = model_folders

    def build(self, initial, subject: str | None) -> None:
        """The accordion at the top of the settings column."""
        with gr.Accordion("Guided start: fill the form for your GPU and dataset", open=True, elem_id="guided-start"):
            gr.Markdown(INTRO, elem_classes=["lw-small"])
            with gr.Row(equal_height=True):
                self.subject = gr.Dropdown(SUBJECT_CHOICES, value=subject or "character", label="The LoRA is of",
                                           elem_id="guided-subject", scale=1)
                self.family = gr.Dropdown(FAMILY_CHOICES, value=AUTO, label="Model family", elem_id="guided-family",
                                          scale=1)
                self.vram = gr.Dropdown(VRAM_CHOICES, value=AUTO, label="GPU memory (VRAM)", elem_id="guided-vram",
                                        scale=1, info="Detected with torch.cuda; choose a size by hand for another "
                                                      "computer.")
            with gr.Row(equal_height=True):
                self.model = gr.Dropdown(choices=self.model_choices(), value=initial.pretrained_model_name_or_path or None,
                                         allow_custom_value=True, label="Base model", elem_id="guided-model", scale=2)
                self.data = gr.Textbox(value=initial.train_data_dir, label="Dataset folder (train_data_dir)",
                                       placeholder="datasets/zqx (holds 10_zqx/ ...)", elem_id="guided-data", scale=2)
            self.fill_btn = gr.Button("Fill in the form", variant="primary", elem_id="guided-fill")
            self.result = gr.HTML("", elem_id="guided-result-box")

    @property
    def check_inputs(self) -> list[Any]:
        return [self.subject, self.family, self.vram]

    def wire(self, form, picker, estimate_box, guard_box, plan, on_plan, filled) -> None:
        """Fill button, and the estimate + warnings on every change of the form or of these choices. `picker`: the
        preset picker (its list is cleared, its filters set to what was filled in); `filled`: the state with the
        user's own fields the last fill set (core.config.presets.fill_values' `earlier`)."""
        def on_fill(subject, model, family, data, vram, earlier, *values):
            g, fill, own, filters = guided_fill(subject, model, family, data, vram, earlier, form.data(values),
                                                self.model_folders())
            if fill is None:
                return [gr.skip()] * len(form.names) + [gr.skip()] * 2 + [fit_view.guided_html(g)] + [gr.skip()] * 3
            return form.updates(fill) + [None, "", fit_view.guided_html(g), own, *filters]

        def on_checks(*args):
            *values, label, subject, family, vram = args
            return checks_html(form.best_effort(values), label, subject, family, vram)

        def on_preset_subject(label: str):
            pr = preset_of(label)
            return pr.subject if pr and pr.subject else gr.skip()

        quiet = {"show_progress": "hidden", "queue": True}
        preset_dd = picker.dropdown
        inputs = [self.subject, self.model, self.family, self.data, self.vram, filled] + form.inputs
        checks = (form.inputs + [preset_dd] + self.check_inputs, [estimate_box, guard_box])
        outputs = form.inputs + [preset_dd, picker.desc, self.result, filled] + picker.filters
        self.fill_btn.click(on_fill, inputs, outputs).then(
            on_plan, form.inputs, [plan], **quiet).then(on_checks, *checks, **quiet)
        preset_dd.select(on_preset_subject, [preset_dd], [self.subject], **quiet)
        triggers = [c.change for c in form.inputs] + [c.change for c in self.check_inputs + [preset_dd]]
        gr.on(triggers, on_checks, *checks, trigger_mode="always_last", **quiet)
        self._on_checks, self._checks = on_checks, checks

    def load(self, blocks) -> None:
        """Estimate and warnings once the page is there (building the tab imports no ML library)."""
        blocks.load(self._on_checks, *self._checks, show_progress="hidden", queue=True)


PLACEHOLDER = '<div class="lw-plan lw-fit" id="vram-estimate"><b>VRAM estimate:</b> computed once the page has loaded.</div>'
