"""What the Training tab does, as plain functions: the model lists, the form's first values, the checks before a
start, config files and presets, start / queue / stop / resume, and what the live view of a run shows.

They take values (configs, paths, the trainer's environment) and return values (HTML, lists, configs), with no
gradio: the tab (ui/training_tab.py) turns them into component updates, and tests call them directly.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core import families
from core.config import presets as presets_mod
from core.config.schema import TrainConfig
from core.config.toml_io import ConfigError, flatten, load_config, read_toml, validate
from core.models.choose import all_parts, describe_base, find_parts
from core.runs import launch
from core.runs.reader import RunBusyError, RunExistsError, RunInfo, is_run_dir, list_runs, read_run, run_dir_of
from core.runs.steps_plan import steps_plan

from . import queue_actions, run_view
from .generate_choices import model_choices
from .labels import label_for

LOG_LINES = 12
REQUEST_NOTES = {
    "stop": "Stop requested: the trainer saves a LoRA and a resumable state after the current step, then stops.",
    "sample": "Samples requested: they appear below after the current step.",
    "save": "Save requested: a LoRA file is written after the current step.",
}
STARTER_NOTE = ('<div class="lw-plan"><b>Ready to try:</b> the form is set up for the built-in demo: the small toy '
                'model learns a shape it has never seen (a star, trigger word <code>zqx</code>) from 16 pictures in '
                '2-3 minutes, even without a GPU. Press <b>Start training</b> and watch the samples turn into '
                'stars. Put your own base model in the models folder (Settings) to start from a blank form.</div>')
TICK_REPLACE = "Tick 'Replace an existing run with the same output name' to start it again from scratch."
BAD_RUN_CONFIG = "The run's config.toml cannot be used:"
Remember = Callable[[str], None]  # the tab's AppContext.remember_output_dir: the history lists that folder too


def _forget(_: str) -> None:
    return None


# --------------------------------------------------------------------------- model lists and the first form
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


# --------------------------------------------------------------------------- live previews of the form
def plan_of(cfg: TrainConfig) -> str:
    """The steps arithmetic under the dataset fields."""
    return run_view.plan_html(steps_plan(cfg.train_data_dir, cfg))


def base_fill(cfg: TrainConfig, model_folders: list[str]) -> tuple[str | None, list[str], dict[str, str]]:
    """The base model's family, the settings its file still needs, and the files found for those settings in the
    model folders that the form leaves empty (filled in for the user)."""
    family, needs = describe_base(cfg.pretrained_model_name_or_path, cfg.base_config_dir)
    found = find_parts(model_folders, cfg.pretrained_model_name_or_path, cfg.base_config_dir) if needs else {}
    return family, needs, {k: v for k, v in found.items() if k in needs and not getattr(cfg, k)}


# --------------------------------------------------------------------------- presets and config files
def apply_preset(label: str, earlier: dict, data: dict[str, Any]) -> tuple[dict | None, str, dict | None]:
    """A chosen preset: (the form's new values or None, its description or an error notice, the user's own fields
    it filled in for the next choice). The preset's values, every other field back to its default except the
    user's own (core.config.presets)."""
    if not label:
        return None, "", None
    try:
        pr = presets_mod.find_preset(label)
    except (KeyError, ConfigError) as e:
        return None, run_view.notice_html(str(e), "err"), None
    return presets_mod.fill_values(pr.values, data, earlier), pr.description, presets_mod.own_values_set(pr.values)


def save_preset(name: str, cfg: TrainConfig) -> tuple[bool, str | None, str]:
    """Save the form as a user preset: (saved, its label in the Preset list, the notice)."""
    try:
        presets_mod.save_user_preset(name, cfg)
    except ConfigError as e:
        return False, None, run_view.errors_html(e.lines, "Cannot save the preset:")
    except OSError as e:
        return False, None, run_view.notice_html(f"Cannot save the preset: {e}", "err")
    label = next((p.label for p in presets_mod.list_presets() if p.user and p.name == name.strip()), None)
    return True, label, run_view.notice_html(f"Saved preset '{name.strip()}'.")


def load_config_file(path: str) -> tuple[TrainConfig | None, str]:
    """A loaded .toml or kohya .json: (its config or None, the note naming the file: loaded, with what the
    conversion changed, or why it could not be loaded)."""
    if not path:
        return None, ""
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
        return None, run_view.errors_html(e.lines, f"{p.name} could not be loaded:")
    note = run_view.notice_html(f"Loaded {p.name}.")
    if report:
        note += '<pre class="lw-errlines">' + run_view.esc("\n".join(report)) + "</pre>"
    return cfg, note


def export_config(cfg: TrainConfig) -> str:
    """The config saved as <output_name>.toml in a new temporary folder, for download: its path."""
    from core.config.toml_io import save_config

    path = Path(tempfile.mkdtemp(prefix="lw-config-")) / f"{cfg.output_name}.toml"
    save_config(cfg, path)
    return str(path)


# --------------------------------------------------------------------------- start and control
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


def start(cfg: TrainConfig, replace: bool, env: dict[str, str], remember: Remember = _forget) -> tuple[str, str, str]:
    """Start training a checked config: (errors HTML, the run folder to view or "", the notice)."""
    problems = start_problems(cfg)
    if problems:
        return run_view.errors_html(problems, "Cannot start yet:"), "", ""
    busy = queue_actions.start_refusal()  # a queued run trains: two at once run out of GPU memory
    if busy:
        return run_view.errors_html([busy], "Cannot start now:"), "", ""
    try:
        launch.start_run(cfg, overwrite=bool(replace), env=env)
    except RunExistsError as e:
        return run_view.errors_html([str(e), TICK_REPLACE], "Cannot start:"), "", ""
    except (RunBusyError, OSError) as e:
        return run_view.errors_html([str(e)], "Cannot start:"), "", ""
    remember(cfg.output_dir)
    return "", str(run_dir_of(cfg).resolve()), run_view.notice_html(f"Started '{cfg.output_name}'.")


def queue(cfg: TrainConfig, replace: bool, env: dict[str, str], remember: Remember = _forget) -> tuple[str, str, str]:
    """Add a checked config to the queue: (errors HTML, the notice, the run folder the queue trains now or next,
    "" on an error)."""
    problems = start_problems(cfg)
    if problems:
        return run_view.errors_html(problems, "Cannot queue yet:"), "", ""
    remember(cfg.output_dir)
    return queue_actions.add_to_queue(cfg, bool(replace), env)


def request(kind: str, run_dir: str) -> str:
    """Ask the training run to stop, sample or save after its current step: the notice."""
    if not run_dir or read_run(run_dir).status != "running":
        return run_view.notice_html("This run is not training.", "warn")
    launch.request(run_dir, kind)
    return run_view.notice_html(REQUEST_NOTES[kind])


def run_config(run_dir: str) -> TrainConfig:
    """The run's config.toml, with the folder and name it really has (whatever the cwd was when it started)."""
    cfg = load_config(Path(run_dir) / "config.toml")
    cfg.output_dir = str(Path(run_dir).parent)
    cfg.output_name = Path(run_dir).name
    return cfg


def resume(run_dir: str, env: dict[str, str], remember: Remember = _forget) -> str:
    """Resume a run from its saved state: the notice."""
    if not run_dir:
        return run_view.notice_html("Select a run first.", "warn")
    busy = queue_actions.start_refusal(resume=True)
    if busy:
        return run_view.notice_html(busy, "err")
    try:
        cfg = run_config(run_dir)
        launch.start_run(cfg, resume=True, env=env)
    except ConfigError as e:
        return run_view.errors_html(e.lines, BAD_RUN_CONFIG)
    except (RunBusyError, RunExistsError, FileNotFoundError, OSError) as e:
        return run_view.notice_html(str(e), "err")
    remember(cfg.output_dir)
    return run_view.notice_html(f"Resuming '{cfg.output_name}' from its saved state.")


def use_config(run_dir: str) -> tuple[TrainConfig | None, str]:
    """A run's settings for the form: (its config or None, the notice)."""
    try:
        cfg = run_config(run_dir)
    except ConfigError as e:
        return None, run_view.errors_html(e.lines, BAD_RUN_CONFIG)
    return cfg, run_view.notice_html(f"Loaded the settings of '{cfg.output_name}' into the form.")


# --------------------------------------------------------------------------- the live view
class _Skip:
    """What `changes` gives for a part the browser shows as it is already (the tab sends gr.skip()); not None,
    which is a value (the loss plot's when there is no loss yet)."""

    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()


def changes(sig: dict | None, parts: dict[str, tuple[Any, Callable[[], Any]]]) -> tuple[dict, dict[str, Any]]:
    """Only what changed since the last refresh: `parts` maps a part to (its signature, a function making its
    value); a part whose signature equals the one in `sig` is SKIP, the others are made. Returns the new
    signatures and the values (a table or plot redrawn every second flickers and loses the reader's place)."""
    sig = dict(sig or {})
    out: dict[str, Any] = {}
    for key, (value_sig, make) in parts.items():
        if key in sig and sig[key] == value_sig:
            out[key] = SKIP
        else:
            sig[key] = value_sig
            out[key] = make()
    return sig, out


@dataclass
class Buttons:
    """Which run buttons show: Stop, Sample now and Save now while it trains; Resume; Copy its settings."""
    running: bool
    resume: bool
    use_config: bool

    @property
    def visible(self) -> tuple[bool, bool, bool, bool, bool]:
        return self.running, self.running, self.running, self.resume, self.use_config


PLOT_SECONDS = 5.0  # while a run trains, its loss plot is redrawn at most this often (the browser redraws it whole)
HISTORY_SECONDS = 10  # while a run trains, the history's durations are brought up to date this often
# How often the page asks for the live view: each ask costs the browser a few tenths of a CPU second (gradio's
# client goes over the whole page), so often only while a run trains.
LIVE_SECONDS, IDLE_SECONDS = 2.0, 5.0


def view_parts(info: RunInfo | None, run_dir: str, runs: list[RunInfo], now: float | None = None) -> dict:
    """The live view's parts for `changes`: progress HTML, loss rows, log text, gallery items, buttons, the
    history rows (while a run trains their signature changes every HISTORY_SECONDS too, for the durations) and the
    seconds to the next refresh."""
    last_loss = info.losses[-1] if info and info.losses else None
    plot_sig = (run_dir, info.status if info else None, len(info.losses) if info else 0, last_loss,
                len(info.val_losses) if info else 0)
    html_ = run_view.progress_html(info)
    log = run_view.log_text(info, LOG_LINES)
    items = run_view.gallery_items(info)
    buttons = Buttons(info is not None and info.status == "running", run_view.can_resume(info), info is not None)
    now = time.time() if now is None else now
    ticking = any(r.status == "running" for r in runs)
    hist_sig = (tuple((str(r.dir), r.status) for r in runs), int(now // HISTORY_SECONDS) if ticking else 0)
    every = LIVE_SECONDS if ticking or buttons.running else IDLE_SECONDS
    return {
        "progress": (html_, lambda: html_),
        "plot": (plot_sig, lambda: run_view.loss_rows(info)),
        "log": (log, lambda: log),
        "gallery": ((run_dir, tuple(p for p, _ in items)), lambda: items),
        "buttons": ((buttons.running, buttons.resume, buttons.use_config), lambda: buttons),
        "history": (hist_sig, lambda: run_view.history_rows(runs)),
        "timer": (every, lambda: every),
    }


def live_view(run_dir: str, sig: dict | None, output_dirs: list[str],
              now: float | None = None) -> tuple[dict, dict[str, Any], list[str], RunInfo | None]:
    """One refresh of the viewed run and the history: (new signatures, the parts' values or SKIP, the run folders
    in history order, the run read). While the run trains, new losses reach the plot every PLOT_SECONDS; its
    first losses, a new run and the run's end at once."""
    now = time.time() if now is None else now
    info = read_run(run_dir) if run_dir and is_run_dir(Path(run_dir)) else None
    runs = list_runs(output_dirs)
    parts = view_parts(info, run_dir, runs, now)
    sig = dict(sig or {})
    shown = sig.get("plot")
    if (info is not None and info.status == "running" and shown and shown[:2] == parts["plot"][0][:2]
            and shown[2] > 0 and now - sig.get("plot_at", 0.0) < PLOT_SECONDS):
        parts["plot"] = (shown, parts["plot"][1])  # drawn less than PLOT_SECONDS ago: the same signature, skipped
    sig, values = changes(sig, parts)
    if values["plot"] is not SKIP:
        sig["plot_at"] = now
    return sig, values, [str(r.dir) for r in runs], info


def pick_run(output_dirs: list[str]) -> str:
    """The run a page load shows: the one training, else the newest, else none ("")."""
    runs = list_runs(output_dirs)
    running = [r for r in runs if r.status == "running"]
    pick = running[0] if running else (runs[0] if runs else None)
    return str(pick.dir) if pick else ""


def history_pick(dirs: list[str], index: Any) -> str | None:
    """The run folder of a clicked history row (index: the row, or (row, column)); None for no row."""
    row = index[0] if isinstance(index, (list, tuple)) else index
    if dirs and isinstance(row, int) and 0 <= row < len(dirs):
        return dirs[row]
    return None
