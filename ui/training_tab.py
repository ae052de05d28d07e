"""The Training tab: the settings form, presets and config files, start/stop, the live view of a run
(progress, loss, samples, log; refreshed every 2 s while a run trains, every 5 s otherwise) and the run history.

Everything about training goes through core: the form is generated from core.config.schema, runs are
started and read with core.runs. What the tab does is in ui/training_actions.py (plain functions); this file
is the layout (settings column, run column, history) and the wiring, with thin adapters that turn the actions'
values into component updates. Reloading the page re-attaches to the run in progress.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.config import presets as presets_mod
from core.models.choose import all_parts, describe_base
from core.runs.launch import command_line

from . import models_panel, queue_panel, run_view
from . import training_actions as actions
from .context import AppContext
from .form import SchemaForm, label_for
from .guided_start import PLACEHOLDER, GuidedStart
from .preset_picker import PresetPicker
from .training_actions import STARTER_NOTE, base_model_choices, part_choices, starting_form

PLAN_GROUPS = ("data", "train", "validation")  # the fields of these schema groups change the step count
QUIET = {"show_progress": "hidden", "queue": True}


# --------------------------------------------------------------------------- layout
def _pickers(ctx: AppContext) -> dict[str, Any]:
    """The form's own components for the base model and its parts: dropdowns of the model folders' files."""
    def model_picker(meta: dict[str, Any], value: Any) -> gr.components.Component:
        return gr.Dropdown(choices=base_model_choices(ctx.settings.model_dirs()), value=value or None,
                           allow_custom_value=True, label="Base model",
                           info=f"{meta['help']} Models in your models folder are listed; you can also type a path "
                                f"or a repo id. `{meta['name']}`", elem_id=f"field-{meta['name']}")

    def part_picker(meta: dict[str, Any], value: Any) -> gr.components.Component:
        return gr.Dropdown(choices=part_choices(ctx.settings.model_dirs()), value=value or None,
                           allow_custom_value=True, label=label_for(meta["name"]),
                           info=f"{meta['help']} Files in your models folder are listed. `{meta['name']}`",
                           elem_id=f"field-{meta['name']}")

    return {"pretrained_model_name_or_path": model_picker, **{part.setting: part_picker for part in all_parts()}}


def _files_accordion() -> SimpleNamespace:
    with gr.Accordion("Save as preset · load or save a config file", open=False, elem_id="files-accordion"):
        with gr.Row(equal_height=True):
            preset_name = gr.Textbox(label="Save these settings as a preset", placeholder="My character preset",
                                     scale=3, elem_id="preset-name")
            save_preset = gr.Button("Save preset", scale=1, elem_id="save-preset")
        with gr.Row():
            load = gr.UploadButton("Load config (.toml, kohya .json)", file_types=[".toml", ".json"], size="md",
                                   elem_id="load-config")
            export = gr.Button("Save config as TOML", size="md", elem_id="export-config")
        export_file = gr.File(label="Config file", visible=False, interactive=False, elem_id="export-file")
        msg = gr.HTML("", elem_id="files-msg")
    return SimpleNamespace(preset_name=preset_name, save_preset=save_preset, load=load, export=export,
                           export_file=export_file, msg=msg)


def _settings_column(ctx: AppContext, form: SchemaForm, picker: PresetPicker, guided: GuidedStart, initial,
                     starter_preset: str | None, starter) -> SimpleNamespace:
    """Presets, the demo's note, the guided start, downloads, config files and the form (with the steps
    arithmetic and the VRAM estimate after the data fields)."""
    initial_family = describe_base(initial.pretrained_model_name_or_path, initial.base_config_dir)
    boxes: list[gr.HTML] = []

    def add_plan_box() -> None:  # the steps arithmetic and, next to it, the live VRAM estimate
        with gr.Row(equal_height=False):
            boxes.append(gr.HTML(actions.plan_of(initial), elem_id="plan-box"))
            boxes.append(gr.HTML(PLACEHOLDER, elem_id="estimate-box"))

    with gr.Column(scale=3, min_width=420):
        picker.build(starter_preset, initial_family[0])
        starter_note = gr.HTML(STARTER_NOTE, elem_id="starter-note", visible=bool(starter_preset))
        guided.build(initial, starter.subject if starter else None)
        downloads = models_panel.build(ctx.settings, ctx.blocks)
        files = _files_accordion()
        form.build(initial, custom=_pickers(ctx), after_basic_group={"data": add_plan_box},
                   initial_family=initial_family)
        for name in ("train_data_dir", "trigger_word"):  # the Dataset tab fills these in
            ctx.components[f"train.{name}"] = form.components[name]
    return SimpleNamespace(starter_note=starter_note, downloads=downloads, files=files, plan=boxes[0],
                           estimate=boxes[1])


def _run_column() -> SimpleNamespace:
    """Start / queue / command, the run's progress and buttons, its loss, samples and log."""
    with gr.Column(scale=2, min_width=360, elem_id="run-column"):
        form_errors = gr.HTML("", elem_id="form-errors-box")
        guard_box = gr.HTML("", elem_id="guardrails-box")
        with gr.Row():
            start = gr.Button("Start training", variant="primary", elem_id="start-btn", scale=2)
            queue = gr.Button("Add to queue", elem_id="queue-add-btn", scale=1)
            command = gr.Button("Show command", elem_id="command-btn", scale=1)
        overwrite = gr.Checkbox(False, label="Replace an existing run with the same output name", elem_id="overwrite")
        command_box = gr.Code(label="Command line for this training (run it from the project folder)",
                              language="shell", visible=False, lines=3, wrap_lines=True, elem_id="command-box")
        progress = gr.HTML(run_view.progress_html(None), elem_id="progress")
        with gr.Row():
            stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop-btn")
            sample = gr.Button("Sample now", visible=False, elem_id="sample-btn")
            save = gr.Button("Save now", visible=False, elem_id="save-btn")
            resume = gr.Button("Resume", variant="primary", visible=False, elem_id="resume-btn")
            use_cfg = gr.Button("Copy its settings to the form", visible=False, elem_id="use-cfg-btn")
        action_msg = gr.HTML("", elem_id="action-msg")
        # starts empty (None): a LinePlot that starts with an empty DataFrame draws no lines later
        loss_plot = gr.LinePlot(value=None, x="step", y="loss", color="series", height=220, elem_id="loss-plot",
                                title="Loss (light: each step, dark: running average, orange: validation)",
                                x_title="step", y_title="loss",
                                color_map={"loss": "#93c5fd", "average": "#1d4ed8", "validation": "#ea580c"},
                                color_title=" ")
        gallery = gr.Gallery(label="Samples (newest first)", columns=4, height=300, object_fit="contain",
                             elem_id="samples", preview=False, fit_columns=False)
        log_box = gr.Textbox(label=f"Log (last {actions.LOG_LINES} lines; the whole log is train.log in the run "
                                   "folder)", lines=actions.LOG_LINES, max_lines=actions.LOG_LINES + 2,
                             interactive=False, elem_id="log")
    return SimpleNamespace(form_errors=form_errors, guard_box=guard_box, start=start, queue=queue, command=command,
                           overwrite=overwrite, command_box=command_box, progress=progress, stop=stop, sample=sample,
                           save=save, resume=resume, use_cfg=use_cfg, action_msg=action_msg, loss_plot=loss_plot,
                           gallery=gallery, log_box=log_box)


def _history() -> gr.Dataframe:
    with gr.Accordion("Run history", open=True, elem_id="history-accordion"):
        gr.Markdown("Click a run to view it. Interrupted and stopped runs can be resumed.", elem_classes=["lw-small"])
        return gr.Dataframe(value=[], headers=run_view.HISTORY_HEADERS, interactive=False, elem_id="history",
                            max_height=300, wrap=True)


def build(ctx: AppContext) -> None:
    """Build the tab inside the current Blocks context."""
    form, picker = SchemaForm(), PresetPicker()
    initial, starter_preset = starting_form(ctx.settings.models_dir, ctx.settings.outputs_dir)
    guided = GuidedStart(lambda: base_model_choices(ctx.settings.model_dirs()), ctx.settings.model_dirs)
    starter = presets_mod.find_preset(starter_preset) if starter_preset else None
    # the user's own fields the last preset filled in (the Demo's sample prompts): the next fill resets them while
    # they are unchanged
    filled = gr.State(presets_mod.own_values_set(starter.values) if starter else {})
    with gr.Row(equal_height=False):
        side = _settings_column(ctx, form, picker, guided, initial, starter_preset, starter)
        run = _run_column()
    queue = queue_panel.QueuePanel()
    queue.build()
    run.history = _history()
    run.viewed, run.sig, run.history_dirs = gr.State(""), gr.State({}), gr.State([])
    run.timer = gr.Timer(actions.IDLE_SECONDS)  # LIVE_SECONDS while a run trains (the live view sets it)

    live = _live(ctx, form, run)
    run.timer.tick(*live, **QUIET)
    _wire_page_load(ctx, form, picker, run, live)
    _wire_form(ctx, form, picker, side, run, starter_preset, filled)
    guided.wire(form, picker, side.estimate, run.guard_box, side.plan, _on_plan(form), filled)
    _wire_model_lists(ctx, form, guided, side)
    _wire_run(ctx, form, side, run, queue, live)


# --------------------------------------------------------------------------- wiring
def _valid(form: SchemaForm, values) -> tuple[Any, str]:
    """The form's config, or None and its problems as HTML."""
    cfg, errors = form.config(values)
    return cfg, run_view.errors_html(errors)


def _on_plan(form: SchemaForm):
    return lambda *values: actions.plan_of(form.best_effort(values))


def _skip_or(value: Any) -> Any:
    return gr.skip() if value is actions.SKIP else value


def _live(ctx: AppContext, form: SchemaForm, run: SimpleNamespace) -> tuple:
    """(fn, inputs, outputs) of the live view's refresh: only what changed is sent (training_actions.live_view)."""
    def refresh(run_dir: str, sig: dict, out_dir: str):
        sig, parts, dirs, info = actions.live_view(run_dir, sig, ctx.output_dirs(out_dir or ""))
        if info is not None:
            ctx.allow(info.dir)
        plot = parts["plot"]
        plot = gr.skip() if plot is actions.SKIP else _loss_frame(plot)  # None when there is no loss yet
        btns = parts["buttons"]
        btns = (gr.skip(),) * 5 if btns is actions.SKIP else tuple(gr.update(visible=v) for v in btns.visible)
        timer = gr.skip() if parts["timer"] is actions.SKIP else gr.Timer(value=parts["timer"])
        return (sig, _skip_or(parts["progress"]), plot, _skip_or(parts["log"]), _skip_or(parts["gallery"]), *btns,
                _skip_or(parts["history"]), dirs, timer)

    outputs = [run.sig, run.progress, run.loss_plot, run.log_box, run.gallery, run.stop, run.sample, run.save,
               run.resume, run.use_cfg, run.history, run.history_dirs, run.timer]
    return refresh, [run.viewed, run.sig, form.components["output_dir"]], outputs


def _wire_page_load(ctx: AppContext, form: SchemaForm, picker: PresetPicker, run: SimpleNamespace, live) -> None:
    """A page load shows the run that trains (else the newest) and lists the user presets saved since."""
    def on_load(out_dir: str, family: str, vram: str, preset: str | None):
        run_dir = actions.pick_run(ctx.output_dirs(out_dir or ""))
        if run_dir:
            ctx.allow(run_dir)
        return run_dir, {}, picker.choices(family, vram, preset)

    ctx.blocks.load(on_load, [form.components["output_dir"]] + picker.filters + [picker.dropdown],
                    [run.viewed, run.sig, picker.dropdown], **QUIET).then(*live, **QUIET)


def _wire_form(ctx: AppContext, form: SchemaForm, picker: PresetPicker, side: SimpleNamespace,
               run: SimpleNamespace, starter_preset: str | None, filled) -> None:
    """Presets, config files, the command line, the steps arithmetic and the base model's own settings."""
    skips = [gr.skip()] * len(form.names)
    on_plan, files = _on_plan(form), side.files

    def on_preset_selected(evt: gr.SelectData, earlier: dict, *values):
        fill, desc, own = actions.apply_preset(evt.value, earlier, form.data(values))
        return skips + [desc, gr.skip()] if fill is None else form.updates(fill) + [desc, own]

    def on_save_preset(name: str, family: str, vram: str, *values):
        cfg, err = _valid(form, values)
        if cfg is None:
            return gr.skip(), err
        saved, label, note = actions.save_preset(name, cfg)
        return (picker.choices(family, vram, None, label) if saved else gr.skip()), note

    def on_load_file(path: str):
        cfg, note = actions.load_config_file(path)
        return (skips if cfg is None else form.updates(cfg)) + [note]

    def on_file(make):  # Save config as TOML, Show command: a file or text shown, or the form's problems
        def handler(*values):
            cfg, err = _valid(form, values)
            return (gr.update(visible=False), err) if cfg is None else (gr.update(value=make(cfg), visible=True), "")
        return handler

    def on_base(*values):
        """Show the settings of the base model's family only, and ask for the files a Flux transformer needs."""
        family, needs, fill = actions.base_fill(form.best_effort(values), ctx.settings.model_dirs())
        return form.family_updates(family, needs, values, fill)

    # select, not change: choosing the preset that is already shown applies it again
    picker.dropdown.select(on_preset_selected, [filled] + form.inputs, form.inputs + [picker.desc, filled]).then(
        on_plan, form.inputs, [side.plan], **QUIET)
    # the demo's note only while its preset is the one chosen (another preset or the guided start clears it)
    picker.dropdown.change(lambda label: gr.update(visible=bool(starter_preset) and label == starter_preset),
                           [picker.dropdown], [side.starter_note], **QUIET)
    files.save_preset.click(on_save_preset, [files.preset_name] + picker.filters + form.inputs,
                            [picker.dropdown, files.msg])
    files.load.upload(on_load_file, [files.load], form.inputs + [files.msg]).then(
        on_plan, form.inputs, [side.plan], **QUIET)
    files.export.click(on_file(actions.export_config), form.inputs, [files.export_file, files.msg])
    run.command.click(on_file(command_line), form.inputs, [run.command_box, run.form_errors])
    base_fields = [form.components[n] for n in ("pretrained_model_name_or_path", "base_config_dir")]
    gr.on([c.change for c in base_fields], on_base, form.inputs, form.family_outputs, trigger_mode="always_last",
          **QUIET)
    plan_triggers = [c.change for n, c in form.components.items() if form.metas[n]["group"] in PLAN_GROUPS]
    gr.on(plan_triggers, on_plan, form.inputs, [side.plan], trigger_mode="always_last", **QUIET)
    picker.wire(base_fields)


def _wire_model_lists(ctx: AppContext, form: SchemaForm, guided: GuidedStart, side: SimpleNamespace) -> None:
    """The base model lists follow the model folders: after a finished download, and on a page load (Settings may
    have added folders)."""
    def current_models():
        found = base_model_choices(ctx.settings.model_dirs())
        return gr.update(choices=found), gr.update(choices=found)

    def after_download():
        return current_models() if models_panel.completed(ctx.settings) else (gr.skip(), gr.skip())

    model_lists = [form.components["pretrained_model_name_or_path"], guided.model]
    side.downloads.then(after_download, None, model_lists)
    ctx.blocks.load(current_models, None, model_lists)
    guided.load(ctx.blocks)


def _wire_run(ctx: AppContext, form: SchemaForm, side: SimpleNamespace, run: SimpleNamespace,
              queue: queue_panel.QueuePanel, live) -> None:
    """Start, Add to queue, Stop / Sample now / Save now, Resume, Copy its settings, and a click in the history."""
    def on_start(replace: bool, *values):
        cfg, err = _valid(form, values)
        if cfg is None:
            return err, gr.skip(), ""
        err, run_dir, note = actions.start(cfg, replace, ctx.settings.trainer_env(), ctx.remember_output_dir)
        return err, run_dir or gr.skip(), note

    def on_queue(replace: bool, viewed: str, *values):
        cfg, err = _valid(form, values)
        if cfg is None:
            return err, "", gr.skip()
        err, note, run_dir = actions.queue(cfg, replace, ctx.settings.trainer_env(), ctx.remember_output_dir)
        return err, note, (run_dir if run_dir and not viewed else gr.skip())  # none in view: the queue's current

    def on_use_config(run_dir: str):
        cfg, note = actions.use_config(run_dir)
        return ([gr.skip()] * len(form.names) if cfg is None else form.updates(cfg)) + [note]

    def on_select(dirs: list[str], evt: gr.SelectData):
        run_dir = actions.history_pick(dirs, evt.index)
        return (gr.skip(),) * 3 if run_dir is None else (run_dir, {}, "")

    run.start.click(on_start, [run.overwrite] + form.inputs, [run.form_errors, run.viewed, run.action_msg]).then(
        lambda: {}, None, [run.sig], **QUIET).then(*live, **QUIET)
    queue.refresh_after(run.queue.click(on_queue, [run.overwrite, run.viewed] + form.inputs,
                                        [run.form_errors, run.action_msg, run.viewed]))
    queue.wire(ctx.settings.trainer_env, run.viewed, run.sig, live)
    for btn, kind in ((run.stop, "stop"), (run.sample, "sample"), (run.save, "save")):
        btn.click(lambda rd, k=kind: actions.request(k, rd), [run.viewed], [run.action_msg])
    run.resume.click(lambda rd: actions.resume(rd, ctx.settings.trainer_env(), ctx.remember_output_dir),
                     [run.viewed], [run.action_msg]).then(lambda: {}, None, [run.sig], **QUIET).then(*live, **QUIET)
    run.use_cfg.click(on_use_config, [run.viewed], form.inputs + [run.action_msg]).then(
        _on_plan(form), form.inputs, [side.plan], **QUIET)
    run.history.select(on_select, [run.history_dirs], [run.viewed, run.sig, run.action_msg]).then(*live, **QUIET)


def _loss_frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows) if rows else None
