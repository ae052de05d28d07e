"""The Dataset, Captioning and Settings tabs' behaviour, without a browser: the plain functions of
ui.dataset_actions, ui.caption_actions and ui.settings_actions on tiny folders in tmp_path.
(The GUI tests test_gui_dataset.py / test_gui_caption.py check the wiring in chromium.)"""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from PIL import Image

from dataset_corpus import GOOD_CAPTION, blobs, png_bytes
from tiny_captioners import make_images

from core.caption.base import Captioner, Option
from ui import caption_actions as cap_act
from ui import dataset_actions as act
from ui import settings_actions as set_act
from ui.settings import Settings, load_settings

def small_folder(root: Path) -> Path:
    """good.png (with a caption), plain.png (without), notes.png (not a picture), tiny.png (too small)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.png").write_bytes(png_bytes(blobs(520, 520, 1)))
    (root / "good.txt").write_text(GOOD_CAPTION, encoding="utf-8")
    (root / "plain.png").write_bytes(png_bytes(blobs(600, 400, 2)))
    (root / "notes.png").write_bytes(b"my notes, not a picture\n")
    (root / "tiny.png").write_bytes(png_bytes(blobs(64, 48, 3)))
    return root


# ---------------------------------------------------------------------------- Dataset: check and prepare
def test_checking_a_folder_counts_and_names_the_problem_files(tmp_path):
    src = small_folder(tmp_path / "pics")
    calls = []
    summary, rows = act.check(f"  {src}  ", 0, False, lambda d, t, m: calls.append((d, t)))
    assert "Checked 4 files" in summary and "2 images can be used" in summary and "2 files left out" in summary
    assert 'class="lw-warn"' in summary  # files are left out: a warning, not "ok"
    by_file = {r[0]: r for r in rows}
    assert "Is not an image although its name ends in .png" in by_file["notes.png"][1]
    assert "tiny.png" in by_file and "plain.png" in by_file  # too small; no caption
    assert calls and calls[-1][1] == 4


def test_checking_a_clean_folder_says_no_problems(tmp_path):
    src = tmp_path / "clean"
    src.mkdir()
    (src / "a.png").write_bytes(png_bytes(blobs(520, 520, 4)))
    (src / "a.txt").write_text("zqx, a picture", encoding="utf-8")
    summary, rows = act.check(str(src), 512, False)
    assert rows == [] and "No problems found." in summary and 'class="lw-ok"' in summary


def test_checking_without_a_folder_or_a_missing_one(tmp_path):
    summary, rows = act.check("   ", 0, False)
    assert rows == [] and "Upload pictures or type a folder first." in summary and "lw-warn" in summary
    summary, rows = act.check(str(tmp_path / "nope"), 0, False)
    assert rows == [] and "Folder not found" in summary and "nope" in summary and "lw-err" in summary


def test_uploads_are_copied_under_the_datasets_folder(tmp_path):
    staged = small_folder(tmp_path / "staged")
    files = [str(staged / "good.png"), str(staged / "good.txt")]
    folder = act.upload_folder(files, str(tmp_path / "datasets"), stamp="20260101-000000")
    assert folder == str(tmp_path / "datasets" / "uploads" / "20260101-000000")
    assert sorted(p.name for p in Path(folder).iterdir()) == ["good.png", "good.txt"]
    assert act.upload_folder([], str(tmp_path / "datasets")) is None
    assert act.upload_folder(None, str(tmp_path / "datasets")) is None


def test_making_the_training_folder(tmp_path):
    src = small_folder(tmp_path / "pics")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    res = act.make_training_folder(str(src), " zqx ", 5, 512, "center", "", "#ffffff", False, False,
                                   datasets_dir=str(tmp_path / "datasets"))
    assert res.ok and "Done: 2 pictures are in" in res.message
    assert res.train_data_dir == str(tmp_path / "datasets" / "zqx")  # empty "save in": named after the name
    assert res.folder == str(tmp_path / "datasets" / "zqx" / "5_zqx")
    assert sorted(p.name for p in Path(res.folder).iterdir()) == ["good.png", "good.txt", "plain.png"]
    assert (Path(res.folder) / "good.txt").read_text(encoding="utf-8") == GOOD_CAPTION
    assert any(r[0] == "notes.png" for r in res.rows)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # the originals are untouched


def test_making_the_training_folder_refuses_bad_values(tmp_path):
    src = small_folder(tmp_path / "pics")
    kw = dict(datasets_dir=str(tmp_path / "datasets"))
    res = act.make_training_folder("", "zqx", 5, 0, "none", "", "", False, False, **kw)
    assert not res.ok and res.rows is None and "Upload pictures or type a folder first (step 1)." in res.message
    res = act.make_training_folder(str(src), "a/b", 5, 0, "none", "", "", False, False, **kw)
    assert not res.ok and "cannot be a folder name" in res.message and "lw-err" in res.message
    res = act.make_training_folder(str(src), "zqx", 0, 0, "none", "", "", False, False, **kw)
    assert not res.ok and "Repeats must be 1 or more" in res.message
    assert not (tmp_path / "datasets" / "zqx").exists()


def test_use_for_training_values():
    assert act.training_values("", "zqx") is None
    assert act.training_values("/d/zqx", " zqx ") == ("/d/zqx", "zqx")
    assert act.training_values("/d/zqx", "  ") == ("/d/zqx", None)  # the Training tab's trigger word is left


# ---------------------------------------------------------------------------- Dataset: the caption editor
@pytest.fixture
def three(tmp_path):
    folder = tmp_path / "10_zqx"
    paths = make_images(folder, size=16)  # red, blue, green
    (folder / "blue.txt").write_text("zqx, blue square, watermark", encoding="utf-8")
    (folder / "green.txt").write_text("zqx, green square", encoding="utf-8")
    return folder, sorted(str(p) for p in paths)


def test_loading_the_pictures(three):
    folder, paths = three
    view = act.load_pictures(f" {folder} ")
    assert view.paths == paths and [g[1] for g in view.gallery] == ["blue.png", "green.png", "red.png"]
    assert view.index == 0 and view.image == paths[0] and view.caption == "zqx, blue square, watermark"
    assert view.position == "Picture 1 of 3: **blue.png**" and view.message == ""
    assert view.tags[0] == ["zqx", 2] and ["watermark", 1] in view.tags
    assert len(tuple(view)) == 8  # one value per output of the editor


def test_loading_an_empty_missing_or_blank_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    view = act.load_pictures(str(tmp_path / "empty"))
    assert view.paths == [] and view.position == "No pictures loaded." and f"No pictures in {tmp_path / 'empty'}." in view.message
    view = act.load_pictures(str(tmp_path / "gone"))
    assert view.paths == [] and "Folder not found" in view.message and "lw-err" in view.message
    assert "Type a folder first." in act.load_pictures("").message


def test_save_and_move_writes_the_caption_and_moves(three):
    folder, paths = three
    j, note, moved = act.save_and_move(paths, 0, "  zqx,   a  blue  thing ", 1)
    assert (j, moved) == (1, True) and "Saved blue.txt." in note
    assert (folder / "blue.txt").read_text(encoding="utf-8") == "zqx, a blue thing"  # white space folded
    j, note, moved = act.save_and_move(paths, 2, "zqx, red", 1)  # already the last one
    assert j == 2 and moved and "That was the last picture." in note
    assert (folder / "red.txt").read_text(encoding="utf-8") == "zqx, red"  # a new caption file
    j, note, _ = act.save_and_move(paths, 0, "zqx, blue", -1)
    assert j == 0 and "That was the first picture." in note
    j, note, _ = act.save_and_move(paths, 1, "zqx, green", 0)  # Save: stays
    assert j == 1 and "That was" not in note
    assert act.picture_view(paths, 1)[1] == "zqx, green"
    assert not list(folder.glob(".*.tmp"))  # no temporary file left behind


def test_save_without_pictures_or_with_a_stale_index(three):
    _, paths = three
    assert act.save_and_move([], 0, "text", 1) == (0, act.notice_html("Load the pictures first.", "warn"), False)
    j, note, moved = act.save_and_move(paths, 7, "text", 1)
    assert (j, moved) == (7, False) and "load the pictures again" in note


def disk_full_on_rename(monkeypatch):
    """The caption's temporary file is written, then the rename fails as on a full disk."""
    import errno

    import core.config.toml_io as toml_io

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(toml_io.os, "replace", full)


def test_a_caption_that_cannot_be_saved_keeps_the_old_one_and_the_text(three, monkeypatch):
    folder, paths = three
    disk_full_on_rename(monkeypatch)
    j, note, moved = act.save_and_move(paths, 0, "zqx, my new words", 1)
    assert (j, moved) == (0, False)  # stays on the picture: the box keeps "zqx, my new words"
    assert "Could not save the caption of blue.png" in note and "Disk full while writing" in note
    assert "Your text is still in the box." in note and "lw-err" in note
    assert (folder / "blue.txt").read_text(encoding="utf-8") == "zqx, blue square, watermark"
    assert sorted(p.name for p in folder.iterdir()) == ["blue.png", "blue.txt", "green.png", "green.txt", "red.png"]


def test_a_bulk_edit_that_cannot_write_says_where(three, monkeypatch):
    folder, paths = three
    disk_full_on_rename(monkeypatch)
    note, caption, tags = act.bulk_edit("prefix", str(folder), paths, 0, "photo of", "")
    assert f"Could not write the captions in {folder}" in note and "lw-err" in note
    assert caption == "zqx, blue square, watermark" and ["zqx", 2] in tags  # nothing changed, shown as it is
    assert (folder / "green.txt").read_text(encoding="utf-8") == "zqx, green square"


def test_gallery_selection():
    assert act.selected_index(["a", "b"], 1) == 1
    assert act.selected_index(["a", "b"], None) == 0
    assert act.selected_index(["a", "b"], 5) is None
    assert act.selected_index([], 0) is None


def test_bulk_edits(three):
    folder, paths = three
    note, caption, tags = act.bulk_edit("trigger", str(folder), paths, 1, "sks", "")
    assert "Changed 3 of 3 captions." in note and caption == "sks, zqx, green square"
    assert ["sks", 3] in tags
    assert (folder / "red.txt").read_text(encoding="utf-8") == "sks"  # created for the picture without one
    note, caption, tags = act.bulk_edit("remove", str(folder), paths, 0, "watermark", "")
    assert "Changed 1 of 3 captions." in note and caption == "sks, zqx, blue square"
    assert all(t != "watermark" for t, _ in tags)
    note, caption, _ = act.bulk_edit("replace", str(folder), paths, 0, "square", "box")
    assert "Changed 2 of 3" in note and caption == "sks, zqx, blue box"


def test_bulk_edits_refused(three, tmp_path):
    folder, paths = three
    assert act.bulk_edit("trigger", str(folder), [], 0, "sks", "") == (
        act.notice_html("Load the pictures first.", "warn"), None, None)
    note, caption, tags = act.bulk_edit("trigger", str(folder), paths, 0, "  ", "")
    assert "Fill in the text field next to the button first." in note and caption is None and tags is None
    note, caption, _ = act.bulk_edit("trigger", str(tmp_path / "moved"), paths, 0, "sks", "")
    assert "Folder not found" in note and caption is None
    assert not (folder / "red.txt").exists()


# ---------------------------------------------------------------------------- Captioning
class Colour(Captioner):
    """A captioner without a model: the name of the strongest colour channel."""
    name, title, description = "colour", "Colour", "names the colour"
    default_model = "none"
    options = (Option("words", 1, "how many words", minimum=1, maximum=3),)
    gate: threading.Event | None = None

    def load(self, progress=None):
        self.loaded = True

    def caption(self, images):
        if self.gate is not None:
            self.gate.wait(10)
        out = []
        for im in images:
            r, g, b = im.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
            out.append(" ".join(["red" if r > max(g, b) else "blue" if b > g else "green"] * self.settings["words"]))
        return out


@pytest.fixture
def no_job():
    yield
    job = cap_act.current_job()
    if Colour.gate is not None:
        Colour.gate.set()
        Colour.gate = None
    if job is not None:
        job.cancel.set()
        job.thread.join(10)


def run_to_end(job):
    assert isinstance(job, cap_act.Job)
    texts = list(cap_act.watch(job, every=0.05))
    return texts, cap_act.finish(job)


def test_captioning_a_folder(tmp_path, no_job):
    folder = tmp_path / "data"
    make_images(folder / "10_zqx", size=16)
    (folder / "10_zqx" / "notes.png").write_bytes(b"not an image")
    job = cap_act.start(f" {folder} ", Colour, "", "zqx, ", "skip", "cpu", {"words": 2.0})
    texts, end = run_to_end(job)
    assert all('role="progressbar"' in t for t in texts)
    assert "Captioned 3, skipped 0, failed 1" in end.summary and "notes.png" in end.summary
    assert 'lw-completed' in end.status and "4/4 images" in end.status
    assert (folder / "10_zqx" / "red.txt").read_text(encoding="utf-8") == "zqx, red red"  # int option: 2 words
    rows = dict(cap_act.caption_rows(end.result))
    assert rows["10_zqx/blue.png"] == "zqx, blue blue" and rows["10_zqx/notes.png"].startswith("✗ cannot be read")
    assert [c for _, c in cap_act.gallery_items(end.result)] == ["zqx, blue blue", "zqx, green green", "zqx, red red"]
    # again: every picture has its caption now
    _, end = run_to_end(cap_act.start(str(folder), Colour, "", "zqx, ", "skip", "cpu", {}))
    assert "Captioned 0, skipped 3, failed 1" in end.summary and cap_act.caption_rows(end.result) == [
        ["10_zqx/notes.png", "✗ cannot be read as an image (not an image file, or a damaged one)"]]


def test_captioning_refusals(tmp_path, no_job):
    out = cap_act.start("  ", Colour, "", "", "skip", "auto", {})
    assert out == cap_act.Outcome("", "⚠ Enter the folder of your images first.")
    out = cap_act.start(str(tmp_path), Colour, "", "", "skip", "auto", {"colours": 3})
    assert isinstance(out, cap_act.Outcome) and "unknown option(s) colours" in out.summary and "lw-errors" in out.summary
    _, end = run_to_end(cap_act.start(str(tmp_path / "nope"), Colour, "", "", "skip", "auto", {}))
    assert end.status == "" and "Folder not found" in end.summary and end.result is None


def test_one_run_at_a_time_and_cancel(tmp_path, no_job):
    make_images(tmp_path / "data", size=16)
    Colour.gate = threading.Event()
    job = cap_act.start(str(tmp_path / "data"), Colour, "", "", "overwrite", "cpu", {})
    assert isinstance(job, cap_act.Job)
    busy = cap_act.start(str(tmp_path / "data"), Colour, "", "", "overwrite", "cpu", {})
    assert busy == cap_act.Outcome(None, "⚠ A captioning run is already going: wait for it or cancel it.")
    assert "cancelling after the current images" in cap_act.cancel()
    Colour.gate.set()
    _, end = run_to_end(job)
    assert "cancelled" in end.summary and "lw-stopped" in end.status
    assert cap_act.cancel() is None  # nothing runs now


def test_model_choices_list_local_folders(tmp_path):
    class Local(Colour):
        needed_files = ("model.onnx",)
        other_models = ("org/other",)
    (tmp_path / "captioners" / "mine").mkdir(parents=True)
    (tmp_path / "captioners" / "mine" / "model.onnx").write_bytes(b"")
    (tmp_path / "captioners" / "empty").mkdir()
    assert cap_act.model_choices(str(tmp_path), Local) == [
        ("none (downloaded on first use)", "none"), ("org/other (downloaded on first use)", "org/other"),
        ("mine (local folder)", str(tmp_path / "captioners" / "mine"))]
    assert cap_act.model_info(Local, "").endswith(f"Downloaded folders can go into {Path('models') / 'captioners'}.")
    assert "`x`" not in cap_act.error_html("run `x` <now>") and "<code>x</code>" in cap_act.error_html("run `x`")
    assert "&lt;now&gt;" in cap_act.error_html("<now>")


# ---------------------------------------------------------------------------- Settings
def test_settings_saved_and_reloaded_token_never_shown(tmp_path):
    s = Settings(path=str(tmp_path / "settings.json"))
    models, comfy = tmp_path / "models", tmp_path / "ComfyUI" / "models"
    models.mkdir()
    comfy.mkdir(parents=True)
    res = set_act.save_settings(s, f" {models} ", f"{comfy}\n\n  {tmp_path / 'unplugged'}  \n", str(tmp_path / "l"),
                                str(tmp_path / "o"), str(tmp_path / "d"), "  hf_supersecret123 ")
    assert res.ok and res.missing == [str(tmp_path / "unplugged")]
    assert f"Saved to {s.path}." in res.message and "Not found now" in res.message and "unplugged" in res.message
    assert str(comfy) not in res.message.split("Not found now")[1]
    assert res.token_line == "Hugging Face token: **set**"
    assert "hf_supersecret123" not in res.message + res.token_line + repr(s)
    back = load_settings(s.path)
    assert back.models_dir == str(models) and back.model_folders == f"{comfy}\n{tmp_path / 'unplugged'}"
    assert back.hf_token == "hf_supersecret123" and back.datasets_dir == str(tmp_path / "d")
    if os.name != "nt":
        assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    # an empty token field keeps the token; everything found: a plain note
    res = set_act.save_settings(s, str(models), str(comfy), "", "", "", "")
    assert res.missing == [] and "Not found now" not in res.message and "lw-note" in res.message
    assert load_settings(s.path).hf_token == "hf_supersecret123"
    line, note = set_act.clear_token(s)
    assert line == "Hugging Face token: **not set**" and "The token was removed." in note
    assert json.loads(Path(s.path).read_text())["hf_token"] == ""


def test_settings_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = Settings(path=str(blocker / "settings.json"))  # its folder is a file
    res = set_act.save_settings(s, "m", "", "l", "o", "d", "hf_abc")
    assert not res.ok and f"Cannot write {s.path}" in res.message and "hf_abc" not in res.message
    line, note = set_act.clear_token(s)
    assert line is None and f"Cannot write {s.path}" in note


def test_looking_for_model_folders(tmp_path):
    a, b = str(tmp_path / "ComfyUI" / "models"), str(tmp_path / "webui" / "models")
    text, msg = set_act.find_model_folders(f"{a}\n", "/m", usual=[a, b, "/m"])
    assert text == f"{a}\n{b}" and msg.startswith("Added 1 folder(s)")
    text, msg = set_act.find_model_folders(f"{a}\n{b}", "/m", usual=[a, b])
    assert text is None and "No ComfyUI, AUTOMATIC1111 or Forge models folder was found" in msg
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)  # found at home by the real look-up
    from core.models.library import usual_folders
    assert usual_folders(tmp_path) == [a]


def test_system_check_failure_is_reported(monkeypatch):
    import core.doctor

    def boom(*a, **k):
        raise RuntimeError("no nvidia-smi")

    monkeypatch.setattr(core.doctor, "doctor_report_text", boom)
    assert set_act.doctor_text() == "The system check failed: RuntimeError: no nvidia-smi"
    assert set_act.has_doctor()
    assert "Python " in set_act.system_line("9.9") and "Gradio 9.9" in set_act.system_line("9.9")
