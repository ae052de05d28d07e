"""Validation loss, the best epoch and early stopping: held-out images, a stable loss, resume, the GUI's view."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from core.config.toml_io import ConfigError, validate
from core.data.holdout import choose_held_out, held_out_count
from core.generation.lora_files import grid_row_labels, list_loras
from core.runs.reader import read_run
from core.runs.steps_plan import steps_plan
from core.train.validation import best_of, evaluations_since_best, rising_since
from train_helpers import tiny_config, train_in_process
from ui import run_view

TOY = Path(__file__).resolve().parent.parent / "models" / "toy-sd15"


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == kind]


def _meta(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# ------------------------------------------------------------------------------------------- pure rules
def test_held_out_count_and_choice():
    assert [held_out_count(20, s) for s in (0, 0.1, 0.01, 2, 3.0)] == [0, 2, 1, 2, 3]
    names = [f"10_a/{i:03d}.png" for i in range(20)]
    first = choose_held_out(names, 0.2, seed=5)
    assert len(first) == 4 and set(first) <= set(names)
    assert choose_held_out(list(reversed(names)), 0.2, seed=5) == first  # the folder's listing order plays no part
    assert choose_held_out(names, 0.2, seed=6) != first
    with pytest.raises(ValueError, match="leaves none to train on"):
        choose_held_out(names[:2], 2, seed=1)


def test_best_rising_and_patience_rules():
    h = [dict(step=0, epoch=0, loss=1.0, path=None), dict(step=10, epoch=1, loss=0.8, path="a"),
         dict(step=20, epoch=2, loss=0.7, path="b"), dict(step=20, epoch=2, loss=0.7, path="b-final")]
    assert best_of(h)["path"] == "b"  # the earliest of equal losses
    assert rising_since(h) is None and evaluations_since_best(h) == 0
    h += [dict(step=30, epoch=3, loss=0.75, path=None)]
    assert rising_since(h) is None and evaluations_since_best(h) == 1  # one rise is not a trend
    h += [dict(step=40, epoch=4, loss=0.9, path="d")]
    assert rising_since(h)["epoch"] == 2 and evaluations_since_best(h) == 2
    assert best_of(h)["path"] == "b"
    assert best_of([dict(step=0, epoch=0, loss=0.1, path=None)]) is None  # only saved files can be best


def test_config_rules():
    for bad, word in ((dict(validation_split=2.5), "whole number"),
                      (dict(validation_split=0.1, validation_data_dir="x"), "both set"),
                      (dict(early_stop_patience=2), "needs a validation loss")):
        with pytest.raises(ConfigError, match=word):
            validate(bad)
    assert validate(dict(validation_split=3)).validates


def test_steps_plan_counts_without_the_held_out_images(tiny_dataset):
    plain = steps_plan(tiny_dataset, validate(dict(train_data_dir=str(tiny_dataset))))
    held = steps_plan(tiny_dataset, validate(dict(train_data_dir=str(tiny_dataset), validation_split=1)))
    assert held.held_out == 1 and held.uses_per_epoch == plain.uses_per_epoch - 10  # its 10 repeats
    assert "1 held out for validation" in held.text
    none_left = steps_plan(tiny_dataset, validate(dict(train_data_dir=str(tiny_dataset), validation_split=4)))
    assert not none_left.ok and "leaves none to train on" in none_left.text


# ------------------------------------------------------------------------------------------ a real run
@pytest.fixture(scope="module")
def validated_run(tiny_sd15, tiny_dataset, tmp_path_factory):
    """12 steps (one epoch = 30 uses), a LoRA and a validation every 4 steps, one image of four held out."""
    out = tmp_path_factory.mktemp("validated")
    torch.set_num_threads(1)
    try:
        cfg = tiny_config(tiny_sd15, tiny_dataset, out, validation_split=1, save_every_n_steps=4)
        trainer = train_in_process(cfg)
    finally:
        torch.set_num_threads(2)
    return trainer, out


def test_validation_events_best_file_and_metadata(validated_run):
    trainer, out = validated_run
    run = out / "lora"
    vals = _events(run, "validation")
    assert [v["step"] for v in vals] == [0, 4, 8, 12]
    assert vals[0]["path"] is None and all(Path(v["path"]).is_file() for v in vals[1:])
    for v in vals[1:]:  # each saved file records the loss it was measured with
        assert float(_meta(v["path"])["ss_validation_loss"]) == pytest.approx(v["loss"], abs=1e-6)
    best = min(vals[1:], key=lambda v: v["loss"])
    end = _events(run, "end")[-1]
    status = json.loads((run / "status.json").read_text())
    assert end["best"]["path"] == status["best"]["path"] == best["path"]
    assert end["best"]["loss"] == best["loss"]
    assert Path(best["path"]).name in end["message"]
    held = json.loads((run / "validation.json").read_text())["images"]
    assert len(held) == 1
    plan = _events(run, "plan")[0]
    assert plan["images"] == 3 and plan["validation_images"] == 1
    assert "validation: 1 image(s) x 8 noise levels" in plan["text"]


def test_the_loss_is_stable(validated_run, one_thread):
    """Evaluating the same weights again gives the same number, bit for bit (fixed levels and noise, eval mode), on
    the one CPU thread the run was trained with (another thread count sums in another order)."""
    trainer, out = validated_run
    last = _events(out / "lora", "validation")[-1]["loss"]
    values = []
    for _ in range(2):
        trainer._val_cached = None
        values.append(trainer._validation_loss())
    assert values[0] == values[1] == last


def test_held_out_images_never_reach_the_optimizer(validated_run, tiny_sd15, tiny_dataset, tmp_path):
    """The LoRA trained with one image held out equals the LoRA trained on a folder without that image."""
    trainer, out = validated_run
    ts = trainer.ts
    assert ts.val_indices and not set(ts.val_indices) & set(ts.uses)
    assert all(s.item_index not in ts.val_indices for e in range(3) for b in ts.epoch_batches(e) for s in b)
    held = json.loads((out / "lora" / "validation.json").read_text())["images"][0]
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / held).unlink()
    (data / held).with_suffix(".txt").unlink()
    torch.set_num_threads(1)
    try:
        train_in_process(tiny_config(tiny_sd15, data, tmp_path / "out", save_every_n_steps=4))
    finally:
        torch.set_num_threads(2)
    a, b = load_file(out / "lora.safetensors"), load_file(tmp_path / "out" / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gui_views_show_the_curve_and_the_best_file(validated_run):
    _, out = validated_run
    info = read_run(out / "lora")
    assert [s for s, _ in info.val_losses] == [0, 4, 8, 12]
    rows = run_view.loss_rows(info)
    assert [r["step"] for r in rows if r["series"] == "validation"] == [0, 4, 8, 12]
    html = run_view.progress_html(info)
    assert "Best file" in html and Path(info.best["path"]).name in html
    infos = list_loras([out])
    assert infos[0].best and infos[0].path == info.best["path"]  # the Generate tab lists it first, marked
    assert sum(i.best for i in infos) == 1 and infos[0].label.startswith("lora")
    assert "★ best" in infos[0].label
    files = sorted(i.path for i in infos if "-step" in i.path)  # the grid's rows: steps 4 and 8, then the final file
    rows = grid_row_labels(files + [str(out / "lora.safetensors")])
    marked = [title for title, detail in rows if "BEST: lowest validation loss" in detail]
    assert marked == [Path(info.best["path"]).stem]


# --------------------------------------------------------------------------- overfitting, early stop
@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """Three toy-model images (stars, a different colour each) used once per epoch."""
    from core.toy.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("small") / "data"
    write_demo_dataset(root, n=3, repeats=1)
    return root


def test_overfitting_warning_and_early_stop(small_set, tmp_path):
    """A run built to overfit (the toy model, two images, a high learning rate): the validation loss of the held-out
    star falls, then rises twice in a row: a warning names the epoch, and early_stop_patience stops the run once
    it has not improved for that many evaluations; the best file is the saved one with the lowest loss."""
    torch.set_num_threads(1)
    try:
        cfg = tiny_config(TOY, small_set, tmp_path, max_train_steps=0, max_train_epochs=16, network_dim=8,
                          network_alpha=8, learning_rate=1e-2, save_every_n_epochs=2, validation_split=1,
                          early_stop_patience=3, min_bucket_reso=64, max_bucket_reso=64)
        trainer = train_in_process(cfg)
    finally:
        torch.set_num_threads(2)
    run = tmp_path / "lora"
    vals = _events(run, "validation")
    distinct = {v["step"]: v for v in vals}
    history = [distinct[s] for s in sorted(distinct)]
    losses = [h["loss"] for h in history]
    rises = [i for i in range(2, len(losses)) if losses[i - 2] < losses[i - 1] < losses[i]]
    assert rises, f"the run was built to overfit, but its validation loss never rose twice in a row: {losses}"
    low = losses.index(min(losses))
    assert 0 < low and len(losses) - 1 - low == 3, f"stopped {len(losses) - 1 - low} evaluations after the best"
    end = _events(run, "end")[-1]
    assert end["status"] == "completed" and "stopped early" in end["message"]
    assert trainer.global_step < trainer.total_steps
    assert (tmp_path / "lora.safetensors").is_file()  # the final file is still written
    saved = [v for v in vals if v["path"]]
    assert end["best"]["path"] == min(saved, key=lambda v: (v["loss"], v["step"]))["path"]
    warnings = [w["message"] for w in _events(run, "warning") if "overfitting" in w["message"]]
    assert len(warnings) == 1 and f"since epoch {history[rises[0] - 2]['epoch']}" in warnings[0]


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_every_family_measures_a_stable_validation_loss(family, tiny_sdxl, tiny_dataset, small_set, tmp_path):
    """SDXL (size conditioning) with held-out images, Flux (flow matching: fixed sigmas, packed latents) with a
    validation folder of its own, through the same loop."""
    if family == "flux":
        from test_flux import flux_config
        from tiny_flux import make_tiny_flux

        cfg = flux_config(make_tiny_flux("dev"), tiny_dataset, tmp_path, max_train_steps=2, save_every_n_steps=2,
                          validation_data_dir=str(small_set))
    else:
        cfg = tiny_config(tiny_sdxl, tiny_dataset, tmp_path, max_train_steps=2, validation_split=1,
                          save_every_n_steps=2)
    trainer = train_in_process(cfg)  # evaluated again below on the same thread count
    vals = _events(tmp_path / "lora", "validation")
    assert [v["step"] for v in vals] == [0, 2] and vals[0]["loss"] != vals[1]["loss"]
    trainer._val_cached = None
    assert trainer._validation_loss() == vals[-1]["loss"]
    record = json.loads((tmp_path / "lora" / "validation.json").read_text())
    plan = _events(tmp_path / "lora", "plan")[0]
    if family == "flux":  # the training images are all trained on; the folder's three are measured
        assert record["source"] == "validation_data_dir" and len(record["images"]) == 3
        assert plan["images"] == 4 and plan["validation_images"] == 3
    else:
        assert record["source"] == "validation_split" and plan["images"] == 3
