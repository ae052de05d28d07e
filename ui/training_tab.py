"""The Training tab: the settings form, presets and config files, start/stop, the live view of a run
(progress, loss, samples, log, refreshed every second) and the run history.

Everything about training goes through core: the form is generated from core.config.schema, runs are
started and read with core.runs.reader. Reloading the page re-attaches to the run in progress.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core import families
from core.config import presets as presets_mod
from core.config.toml_io import ConfigError, flatten, load_config, read_toml, validate
from core.runs.launch import command_line, request, start_run
from core.runs.reader import RunBusyError, RunExistsError, is_run_dir, list_runs, read_run, run_dir_of
from core.runs.steps_plan import steps_plan
from core.config.schema import TrainConfig
from core.models.choose import all_parts, describe_base, find_parts

from . import models_panel, queue_panel, run_view
from .context import AppContext
from .form import SchemaForm, label_for
from .guided_start import PLACEHOLDER, GuidedStart
from .preset_picker import PresetPicker

MODEL_EXTS = (".safetensors", ".ckpt")
LOG_LINES = 12
PLAN_GROUPS = ("data", "train", "validation")  # the fields of these schema groups change the step count
REQUEST_NOTES = {
    "stop": "Stop requested: the trainer saves a LoRA and a resumable state after the current step, then stops.",
    "sample": "Samples requested: they appear below after the current step.",
    "save": "Save requested: a LoRA file is written after the current step.",
}


def base_model_choices(folders: list[str]) -> list[tuple[str, str]]:
    """The base models in the model folders, recognised by content (core/models/library.py) and grouped by family:
    (label, path), the label saying the family, whether it is a diffusers folder, and what a transformer-only file
    still needs."""
    from core.models.library import scan

    lib = scan(folders)
    out = []
    for family, files in lib.by_family().items():
        for f in files:
            needs = f" · needs {', '.join(f.needs)}" if f.needs else ""
            kind = " (diffusers folder)" if Path(f.path).is_dir() else ""
            out.append((f"{families.title(family)} · {Path(f.path).name}{kind}{needs}", f.path))
    return out


def part_choices(folders: list[str]) -> list[tuple[str, str]]:
    """Text encoders and autoencoders in the model folders, for the part pickers: (label, path)."""
    from core.models.library import scan

    lib = scan(folders)
    return [(f"{Path(f.path).name} · {f.words}", f.path) for f in lib.files if f.role in ("text_encoder", "vae")]


def model_choices(models_dir: str) -> list[str]:
    """Single-file checkpoints and diffusers folders in the models folder (one level of sub-folders)."""
    root = Path(models_dir).expanduser()
    if not root.is_dir():
        return []
    found: list[str] = []
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in MODEL_EXTS:
            found.append(str(p))
        elif p.is_dir():
            if (p / "model_index.json").is_file():
                found.append(str(p))
            else:
                found += [str(q) for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in MODEL_EXTS]
    return found


STARTER_NOTE = ('<div class="lw-plan"><b>Ready to try:</b> the form is set up for the built-in demo: the small toy '
                'model learns a shape it has never seen (a star, trigger word <code>zqx</code>) from 16 pictures in '
                '2-3 minutes, even without a GPU. Press <b>Start training</b> and watch the samples turn into '
                'stars. Put your own base model in the models folder (Settings) to start from a blank form.</div>')


def starting_form(models_dir: str, outputs_dir: str) -> tuple[TrainConfig, str | None]:
    """The form's first values and preset: the built-in demo (toy model, demo dataset, Demo preset) when the
    models folder holds no model of the user's own, else an empty form."""
    from core.toy.starter import DEMO_PRESET, TOY_MODEL, starter_config

    own = [m for m in model_choices(models_dir) if Path(m).resolve() != TOY_MODEL.resolve()]
    if not own:
        try:
            cfg = starter_config(outputs_dir)
        except (OSError, ConfigError, KeyError):  # no demo then: a read-only outputs folder, a missing preset
            cfg = None
        if cfg is not None:
            return cfg, DEMO_PRESET
    return TrainConfig(output_dir=outputs_dir), None


def build(ctx: AppContext) -> None:
    """Build the tab inside the current Blocks context."""
    form = SchemaForm()
    initial, starter_preset = starting_form(ctx.settings.models_dir, ctx.settings.outputs_dir)
    initial_family = describe_base(initial.pretrained_model_name_or_path, initial.base_config_dir)
    picker = PresetPicker()

    def model_picker(meta: dict[str, Any], value: Any) -> gr.components.Component:
        return gr.Dropdown(choices=base_model_choices(ctx.settings.model_dirs()), value=value or None,
                           allow_custom_value=True, label="Base model",
                           info=f"{meta['help']} Models in your models folder are listed; you can also type a path "
                                f"or a repo id. `{meta['name']}`", elem_id=f"field-{meta['name']}")

    def part_picker(meta: dict[str, Any], value: Any) -> gr.components.Component:
        return gr.Dropdown(choices=part_choices(ctx.settings.model_dirs()), value=value or None, allow_custom_value=True, label=label_for(meta["name"]),
                           info=f"{meta['help']} Files in your models folder are listed. `{meta['name']}`",
                           elem_id=f"field-{meta['name']}")

    plan_box: list[gr.HTML] = []

    def add_plan_box() -> None:  # the steps arithmetic and, next to it, the live VRAM estimate
        with gr.Row(equal_height=False):
            plan_box.append(gr.HTML(run_view.plan_html(steps_plan(initial.train_data_dir, initial)), elem_id="plan-box"))
            plan_box.append(gr.HTML(PLACEHOLDER, elem_id="estimate-box"))

    guided = GuidedStart(lambda: base_model_choices(ctx.settings.model_dirs()), ctx.settings.model_dirs)
    starter = presets_mod.find_preset(starter_preset) if starter_preset else None
    # the user's own fields the last preset filled in (the Demo's sample prompts): the next fill resets them while
    # they are unchanged
    filled = gr.State(presets_mod.own_values_set(starter.values) if starter else {})

    with gr.Row(equal_height=False):
        # ------------------------------------------------------------------ settings column
        with gr.Column(scale=3, min_width=420):
            picker.build(starter_preset, initial_family[0])
            preset_dd, preset_desc = picker.dropdown, picker.desc
            starter_note = gr.HTML(STARTER_NOTE, elem_id="starter-note", visible=bool(starter_preset))
            guided.build(initial, starter.subject if starter else None)
            downloads = models_panel.build(ctx.settings, ctx.blocks)
            with gr.Accordion("Save as preset · load or save a config file", open=False, elem_id="files-accordion"):
                with gr.Row(equal_height=True):
                    preset_name = gr.Textbox(label="Save these settings as a preset", placeholder="My character preset",
                                             scale=3, elem_id="preset-name")
                    save_preset_btn = gr.Button("Save preset", scale=1, elem_id="save-preset")
                with gr.Row():
                    load_btn = gr.UploadButton("Load config (.toml, kohya .json)", file_types=[".toml", ".json"],
                                               size="md", elem_id="load-config")
                    export_btn = gr.Button("Save config as TOML", size="md", elem_id="export-config")
                export_file = gr.File(label="Config file", visible=False, interactive=False, elem_id="export-file")
                files_msg = gr.HTML("", elem_id="files-msg")
            form.build(initial, custom={"pretrained_model_name_or_path": model_picker,
                                        **{part.setting: part_picker for part in all_parts()}},
                       after_basic_group={"data": add_plan_box},
                       initial_family=initial_family)
            for name in ("train_data_dir", "trigger_word"):  # the Dataset tab fills these in
                ctx.components[f"train.{name}"] = form.components[name]
        # ------------------------------------------------------------------ run column
        with gr.Column(scale=2, min_width=360, elem_id="run-column"):
            form_errors = gr.HTML("", elem_id="form-errors-box")
            guard_box = gr.HTML("", elem_id="guardrails-box")
            with gr.Row():
                start_btn = gr.Button("Start training", variant="primary", elem_id="start-btn", scale=2)
                queue_btn = gr.Button("Add to queue", elem_id="queue-add-btn", scale=1)
                command_btn = gr.Button("Show command", elem_id="command-btn", scale=1)
            overwrite = gr.Checkbox(False, label="Replace an existing run with the same output name",
                                    elem_id="overwrite")
            command_box = gr.Code(label="Command line for this training (run it from the project folder)",
                                  language="shell", visible=False, lines=3, wrap_lines=True, elem_id="command-box")
            progress = gr.HTML(run_view.progress_html(None), elem_id="progress")
            with gr.Row():
                stop_btn = gr.Button("Stop", variant="stop", visible=False, elem_id="stop-btn")
                sample_btn = gr.Button("Sample now", visible=False, elem_id="sample-btn")
                save_btn = gr.Button("Save now", visible=False, elem_id="save-btn")
                resume_btn = gr.Button("Resume", variant="primary", visible=False, elem_id="resume-btn")
                use_cfg_btn = gr.Button("Copy its settings to the form", visible=False, elem_id="use-cfg-btn")
            action_msg = gr.HTML("", elem_id="action-msg")
            # starts empty (None): a LinePlot that starts with an empty DataFrame draws no lines later
            loss_plot = gr.LinePlot(value=None, x="step", y="loss", color="series", height=220, elem_id="loss-plot",
                                    title="Loss (light: each step, dark: running average, orange: validation)",
                                    x_title="step", y_title="loss",
                                    color_map={"loss": "#93c5fd", "average": "#1d4ed8", "validation": "#ea580c"},
                                    color_title=" ")
            gallery = gr.Gallery(label="Samples (newest first)", columns=4, height=300, object_fit="contain",
                                 elem_id="samples", preview=False, fit_columns=False)
            log_box = gr.Textbox(label=f"Log (last {LOG_LINES} lines; the whole log is train.log in the run folder)",
                                 lines=LOG_LINES, max_lines=LOG_LINES + 2, interactive=False, elem_id="log")
    queue = queue_panel.QueuePanel()
    queue.build()
    with gr.Accordion("Run history", open=True, elem_id="history-accordion"):
        gr.Markdown("Click a run to view it. Interrupted and stopped runs can be resumed.", elem_classes=["lw-small"])
        history = gr.Dataframe(value=[], headers=run_view.HISTORY_HEADERS, interactive=False, elem_id="history",
                               max_height=300, wrap=True)

    viewed_run = gr.State("")
    view_sig = gr.State({})
    history_dirs = gr.State([])
    timer = gr.Timer(1.0)
    plan, estimate_box = plan_box
    out_dir_comp = form.components["output_dir"]

    # ---------------------------------------------------------------- helpers
    def valid_config(values) -> tuple[TrainConfig | None, str]:
        cfg, errors = form.config(values)
        return cfg, run_view.errors_html(errors)

    # ---------------------------------------------------------------- presets
    def on_preset(label: str, earlier: dict, values):
        """The preset's values, every other field reset to its default except the user's own (core.config.presets)."""
        if not label:
            return [gr.skip()] * len(form.names) + ["", gr.skip()]
        try:
            pr = presets_mod.find_preset(label)
        except (KeyError, ConfigError) as e:
            return [gr.skip()] * len(form.names) + [run_view.notice_html(str(e), "err"), gr.skip()]
        fill = presets_mod.fill_values(pr.values, form.data(values), earlier)
        return form.updates(fill) + [pr.description, presets_mod.own_values_set(pr.values)]

    def on_preset_selected(evt: gr.SelectData, earlier: dict, *values):
        return on_preset(evt.value, earlier, values)

    def on_save_preset(name: str, family: str, vram: str, *values):
        cfg, err = valid_config(values)
        if cfg is None:
            return gr.skip(), err
        try:
            presets_mod.save_user_preset(name, cfg)
        except ConfigError as e:
            return gr.skip(), run_view.errors_html(e.lines, "Cannot save the preset:")
        except OSError as e:
            return gr.skip(), run_view.notice_html(f"Cannot save the preset: {e}", "err")
        label = next((p.label for p in presets_mod.list_presets() if p.user and p.name == name.strip()), None)
        return picker.choices(family, vram, None, label), run_view.notice_html(f"Saved preset '{name.strip()}'.")

    # ---------------------------------------------------------------- config files
    def on_load_file(path: str):
        skip = [gr.skip()] * len(form.names)
        if not path:
            return skip + [""]
        p = Path(path)
        report: list[str] = []
        try:
            if p.suffix.lower() == ".json":
                from core.convert_config import convert

                data, report = convert(p)
            else:
                data = flatten(read_toml(p))
                if any(k not in TrainConfig.model_fields for k in data):
                    from core.convert_config import convert

                    data, report = convert(p)
            cfg = validate(data)
        except ConfigError as e:
            return skip + [run_view.errors_html(e.lines, f"{p.name} could not be loaded:")]
        note = run_view.notice_html(f"Loaded {p.name}.")
        if report:
            note += '<pre class="lw-errlines">' + run_view.esc("\n".join(report)) + "</pre>"
        return form.updates(cfg) + [note]

    def on_export(*values):
        cfg, err = valid_config(values)
        if cfg is None:
            return gr.update(visible=False), err
        from core.config.toml_io import save_config

        path = Path(tempfile.mkdtemp(prefix="lw-config-")) / f"{cfg.output_name}.toml"
        save_config(cfg, path)
        return gr.update(value=str(path), visible=True), ""

    def on_command(*values):
        cfg, err = valid_config(values)
        if cfg is None:
            return gr.update(visible=False), err
        return gr.update(value=command_line(cfg), visible=True), ""

    # ---------------------------------------------------------------- steps arithmetic
    def on_plan(*values):
        cfg = form.best_effort(values)
        return run_view.plan_html(steps_plan(cfg.train_data_dir, cfg))

    # ---------------------------------------------------------------- the base model's own settings
    def on_base(*values):
        """Show the settings of the base model's family only, and ask for the files a Flux transformer needs."""
        cfg = form.best_effort(values)
        family, needs = describe_base(cfg.pretrained_model_name_or_path, cfg.base_config_dir)
        found = find_parts(ctx.settings.model_dirs(), cfg.pretrained_model_name_or_path, cfg.base_config_dir) \
            if needs else {}
        fill = {k: v for k, v in found.items() if k in needs and not getattr(cfg, k)}  # files found: filled in
        return form.family_updates(family, needs, values, fill)

    # ---------------------------------------------------------------- start / control
    def start_problems(cfg: TrainConfig) -> list[str]:
        """What keeps a valid config from training (Start and Add to queue)."""
        problems = []
        if not cfg.pretrained_model_name_or_path.strip():
            problems.append("Base model (pretrained_model_name_or_path) is empty: choose a model file, a diffusers "
                            "folder or a Hugging Face repo id.")
        family, needs = describe_base(cfg.pretrained_model_name_or_path, cfg.base_config_dir)
        title = families.title(family)
        problems += [f"This {title} file holds only the {families.get(family).denoiser_words}: choose {p.words} in "
                     f"{label_for(p.setting)} (`{p.setting}`)." for p in all_parts()
                     if p.setting in needs and not getattr(cfg, p.setting)]
        plan_ = steps_plan(cfg.train_data_dir, cfg)
        if not plan_.ok:
            problems += plan_.problems or ["The training images folder holds no usable images."]
        return problems

    def on_start(replace: bool, *values):
        cfg, err = valid_config(values)
        if cfg is None:
            return err, gr.skip(), ""
        problems = start_problems(cfg)
        if problems:
            return run_view.errors_html(problems, "Cannot start yet:"), gr.skip(), ""
        busy = queue_panel.start_refusal()  # a queued run trains: two at once run out of GPU memory
        if busy:
            return run_view.errors_html([busy], "Cannot start now:"), gr.skip(), ""
        try:
            start_run(cfg, overwrite=bool(replace), env=ctx.settings.trainer_env())
        except RunExistsError as e:
            return (run_view.errors_html([str(e), "Tick 'Replace an existing run with the same output name' to "
                                          "start it again from scratch."], "Cannot start:"), gr.skip(), "")
        except (RunBusyError, OSError) as e:
            return run_view.errors_html([str(e)], "Cannot start:"), gr.skip(), ""
        ctx.remember_output_dir(cfg.output_dir)
        return "", str(run_dir_of(cfg).resolve()), run_view.notice_html(f"Started '{cfg.output_name}'.")

    def on_queue(replace: bool, viewed: str, *values):
        cfg, err = valid_config(values)
        if cfg is None:
            return err, "", gr.skip()
        problems = start_problems(cfg)
        if problems:
            return run_view.errors_html(problems, "Cannot queue yet:"), "", gr.skip()
        ctx.remember_output_dir(cfg.output_dir)
        err, note, run_dir = queue_panel.add_to_queue(cfg, bool(replace), ctx.settings.trainer_env())
        return err, note, (run_dir if run_dir and not viewed else gr.skip())  # none in view: the queue's current

    def on_request(kind: str, run_dir: str):
        if not run_dir or read_run(run_dir).status != "running":
            return run_view.notice_html("This run is not training.", "warn")
        request(run_dir, kind)
        return run_view.notice_html(REQUEST_NOTES[kind])

    def run_config(run_dir: str) -> TrainConfig:
        cfg = load_config(Path(run_dir) / "config.toml")
        cfg.output_dir = str(Path(run_dir).parent)  # the folder it really is in, whatever the cwd was
        cfg.output_name = Path(run_dir).name
        return cfg

    def on_resume(run_dir: str):
        if not run_dir:
            return run_view.notice_html("Select a run first.", "warn")
        busy = queue_panel.start_refusal(resume=True)
        if busy:
            return run_view.notice_html(busy, "err")
        try:
            cfg = run_config(run_dir)
            start_run(cfg, resume=True, env=ctx.settings.trainer_env())
        except ConfigError as e:
            return run_view.errors_html(e.lines, "The run's config.toml cannot be used:")
        except (RunBusyError, RunExistsError, FileNotFoundError, OSError) as e:
            return run_view.notice_html(str(e), "err")
        ctx.remember_output_dir(cfg.output_dir)
        return run_view.notice_html(f"Resuming '{cfg.output_name}' from its saved state.")

    def on_use_config(run_dir: str):
        try:
            cfg = run_config(run_dir)
        except ConfigError as e:
            return [gr.skip()] * len(form.names) + [run_view.errors_html(e.lines, "The run's config.toml cannot be used:")]
        return form.updates(cfg) + [run_view.notice_html(f"Loaded the settings of '{cfg.output_name}' into the form.")]

    # ---------------------------------------------------------------- live view
    def refresh(run_dir: str, sig: dict, out_dir: str):
        sig = dict(sig or {})
        info = read_run(run_dir) if run_dir and is_run_dir(Path(run_dir)) else None
        if info is not None:
            ctx.allow(info.dir)

        def emit(key: str, value_sig: Any, make):
            if key in sig and sig[key] == value_sig:
                return gr.skip()
            sig[key] = value_sig
            return make()

        status = info.status if info else None
        html_ = run_view.progress_html(info)
        prog = emit("progress", html_, lambda: html_)
        last_loss = info.losses[-1] if info and info.losses else None
        plot = emit("plot", (run_dir, len(info.losses) if info else 0, last_loss, len(info.val_losses) if info else 0),
                    lambda: _loss_frame(run_view.loss_rows(info)))  # None when there is no loss yet
        log = run_view.log_text(info, LOG_LINES)
        log_out = emit("log", log, lambda: log)
        items = run_view.gallery_items(info)
        gal = emit("gallery", (run_dir, tuple(p for p, _ in items)), lambda: items)
        running = status == "running"
        can_resume = run_view.can_resume(info)
        btns = emit("buttons", (running, can_resume, info is not None),
                    lambda: (gr.update(visible=running), gr.update(visible=running),
                             gr.update(visible=running), gr.update(visible=can_resume),
                             gr.update(visible=info is not None)))
        btns = btns if isinstance(btns, tuple) else (gr.skip(),) * 5

        runs = list_runs(ctx.output_dirs(out_dir or ""))
        hist_sig = (tuple((str(r.dir), r.status) for r in runs), int(time.time() // 2))
        hist = emit("history", hist_sig, lambda: run_view.history_rows(runs))
        dirs = [str(r.dir) for r in runs]
        return (sig, prog, plot, log_out, gal, *btns, hist, dirs)

    live_outputs = [view_sig, progress, loss_plot, log_box, gallery, stop_btn, sample_btn, save_btn, resume_btn,
                    use_cfg_btn, history, history_dirs]
    live_inputs = [viewed_run, view_sig, out_dir_comp]
    quiet = {"show_progress": "hidden", "queue": True}

    def pick_run(out_dir: str, family: str, vram: str, preset: str | None):
        runs = list_runs(ctx.output_dirs(out_dir or ""))
        running = [r for r in runs if r.status == "running"]
        pick = running[0] if running else (runs[0] if runs else None)
        if pick is not None:
            ctx.allow(pick.dir)
        return (str(pick.dir) if pick else ""), {}, picker.choices(family, vram, preset)  # new user presets

    def on_select(dirs: list[str], evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if dirs and isinstance(row, int) and 0 <= row < len(dirs):
            return dirs[row], {}, ""
        return gr.skip(), gr.skip(), gr.skip()

    # ---------------------------------------------------------------- wiring
    timer.tick(refresh, live_inputs, live_outputs, **quiet)
    ctx.blocks.load(pick_run, [out_dir_comp] + picker.filters + [preset_dd], [viewed_run, view_sig, preset_dd],
                    **quiet).then(refresh, live_inputs, live_outputs, **quiet)
    # select, not change: choosing the preset that is already shown applies it again
    preset_dd.select(on_preset_selected, [filled] + form.inputs, form.inputs + [preset_desc, filled]).then(
        on_plan, form.inputs, [plan], **quiet)
    # the demo's note only while its preset is the one chosen (another preset or the guided start clears it)
    preset_dd.change(lambda label: gr.update(visible=bool(starter_preset) and label == starter_preset), [preset_dd],
                     [starter_note], **quiet)
    save_preset_btn.click(on_save_preset, [preset_name] + picker.filters + form.inputs, [preset_dd, files_msg])
    load_btn.upload(on_load_file, [load_btn], form.inputs + [files_msg]).then(on_plan, form.inputs, [plan], **quiet)
    export_btn.click(on_export, form.inputs, [export_file, files_msg])
    command_btn.click(on_command, form.inputs, [command_box, form_errors])
    base_fields = [form.components[n] for n in ("pretrained_model_name_or_path", "base_config_dir")]
    gr.on([c.change for c in base_fields], on_base, form.inputs, form.family_outputs, trigger_mode="always_last",
          **quiet)
    plan_triggers = [c.change for n, c in form.components.items() if form.metas[n]["group"] in PLAN_GROUPS]
    gr.on(plan_triggers, on_plan, form.inputs, [plan], trigger_mode="always_last", **quiet)
    picker.wire(base_fields)
    guided.wire(form, picker, estimate_box, guard_box, plan, on_plan, filled)

    def after_download():  # a finished download appears in the base model lists at once
        if not models_panel.completed(ctx.settings):
            return gr.skip(), gr.skip()
        found = base_model_choices(ctx.settings.model_dirs())
        return gr.update(choices=found), gr.update(choices=found)

    model_lists = [form.components["pretrained_model_name_or_path"], guided.model]
    downloads.then(after_download, None, model_lists)

    def current_models():  # a page load lists the model folders as they are now (Settings may have added some)
        found = base_model_choices(ctx.settings.model_dirs())
        return gr.update(choices=found), gr.update(choices=found)

    ctx.blocks.load(current_models, None, model_lists)
    guided.load(ctx.blocks)
    start_btn.click(on_start, [overwrite] + form.inputs, [form_errors, viewed_run, action_msg]).then(
        lambda: {}, None, [view_sig], **quiet).then(refresh, live_inputs, live_outputs, **quiet)
    queue.refresh_after(queue_btn.click(on_queue, [overwrite, viewed_run] + form.inputs,
                                        [form_errors, action_msg, viewed_run]))
    queue.wire(ctx.settings.trainer_env, viewed_run, view_sig, (refresh, live_inputs, live_outputs))
    for btn, kind in ((stop_btn, "stop"), (sample_btn, "sample"), (save_btn, "save")):
        btn.click(lambda rd, k=kind: on_request(k, rd), [viewed_run], [action_msg])
    resume_btn.click(on_resume, [viewed_run], [action_msg]).then(lambda: {}, None, [view_sig], **quiet).then(
        refresh, live_inputs, live_outputs, **quiet)
    use_cfg_btn.click(on_use_config, [viewed_run], form.inputs + [action_msg]).then(
        on_plan, form.inputs, [plan], **quiet)
    history.select(on_select, [history_dirs], [viewed_run, view_sig, action_msg]).then(
        refresh, live_inputs, live_outputs, **quiet)


def _loss_frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows) if rows else None
