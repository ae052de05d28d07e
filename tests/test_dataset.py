"""Dataset tools (core/dataset_tools): check, prepare, captions, and `python -m core dataset ...`, on a corpus of bad files.

Pure PIL/numpy: no torch, no GPU, a few seconds.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.buckets import BucketChooser
from core.data.dataset import load_items
from core.dataset_tools import PrepareError, check_folder, prepare
from core.dataset_tools import captions as cap
from core.dataset_tools import phash
from core.dataset_tools.prepare import focus_offset
from dataset_corpus import GOOD_CAPTION, LEGACY_CAPTION, NON_ASCII, blobs, hash_tree, make_corpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "originals"
    expected = make_corpus(src)
    before = hash_tree(src)
    yield src, expected
    assert hash_tree(src) == before, "the originals were changed"


def kinds(report) -> set[tuple[str, str]]:
    return {(p.file, p.kind) for p in report.problems}


def test_check_names_every_problem_file(corpus):
    src, expected = corpus
    report = check_folder(src)
    found = kinds(report)
    for name, kind in expected.items():
        if kind:
            assert (name, kind) in found, f"{name}: {kind} not reported; got {sorted(found)}"
    usable = {im.rel for im in report.usable}
    errors = {p.file for p in report.problems if p.severity == "error"}
    assert not usable & errors
    assert {"good.png", "tall.jpg", "sub/nested.webp", NON_ASCII, "rotated.jpg", "near.jpg"} <= usable
    assert {"corrupt.jpg", "truncated.png", "empty.png", "notes.png", "bomb.png", "small.png",
            "copy of good.png"} <= errors
    for p in report.problems:
        assert p.message and p.action and p.file in report.text()
    assert "Left out" in report.text() and "decompression bomb" in report.text()


def test_check_keep_small_and_progress(corpus):
    src, _ = corpus
    calls = []
    report = check_folder(src, resolution=128, progress=lambda d, t, m: calls.append((d, t)))
    assert "small.png" in {im.rel for im in report.usable}  # 80 px is not under half of 128
    assert calls and calls[-1][0] == calls[-1][1]
    report = check_folder(src, keep_small=True)
    assert "small.png" in {im.rel for im in report.usable}


def test_prepare_copies_fixes_and_trainer_reads_it(corpus, tmp_path):
    src, _ = corpus
    result = prepare(src, tmp_path / "train", name="zqx", repeats=10)
    folder = tmp_path / "train" / "10_zqx"
    assert result.folder == folder and result.train_data_dir == tmp_path / "train"
    names = {p.name for p in folder.iterdir()}
    assert (folder / "good.png").read_bytes() == (src / "good.png").read_bytes()  # nothing to fix: same bytes
    assert (folder / "tall.jpg").read_bytes() == (src / "tall.jpg").read_bytes()
    assert "wrong_ext.jpg" in names and "wrong_ext.png" not in names
    assert "nested.webp" in names  # from a sub-folder; the trainer reads webp, so copied as it is
    for bad in ("corrupt", "truncated", "empty", "notes", "bomb", "small", "copy of good"):
        assert not any(n.startswith(bad + ".") for n in names), bad
    with Image.open(folder / "rotated.png") as im:  # stored 600x400 with EXIF 6: upright 400x600
        assert im.size == (400, 600) and not im.getexif().get(0x0112)
        r, g, b = im.convert("RGB").getpixel((400 - 20, 20))  # the red corner is now top-right
        assert r > 200 and g < 60 and b < 60
    for name in ("cmyk.png", "deep16.png", "palette_alpha.png"):
        with Image.open(folder / name) as im:
            assert im.mode == "RGB", name
    with Image.open(folder / "deep16.png") as im:
        arr = np.asarray(im)
        assert 20 < arr.mean() < 235 and arr.std() > 5  # scaled to 8 bits, not clipped to white
    with Image.open(folder / "palette_alpha.png") as im:
        assert im.getpixel((50, 250)) == (255, 255, 255)  # transparent half filled with white
    caption = (folder / Path(NON_ASCII).with_suffix(".txt").name).read_bytes()
    assert caption.decode("utf-8") == LEGACY_CAPTION
    assert not (folder / "no caption.txt").exists()
    assert (tmp_path / "train" / "prepare_report.txt").read_text(encoding="utf-8").count("bomb.png") == 1
    chooser = BucketChooser((512, 512), min_reso=256, max_reso=1024, step=64)
    items = load_items(tmp_path / "train", is_reg=False, trigger="zqx", caption_ext=".txt", chooser=chooser)
    assert len(items) == len(result.written) == len(check_folder(src).usable)
    by_name = {it.path.name: it for it in items}
    assert by_name[NON_ASCII].caption == "zqx, " + LEGACY_CAPTION and not by_name[NON_ASCII].warnings
    assert by_name["no caption.png"].caption == "zqx"
    assert by_name["good.png"].caption == GOOD_CAPTION


@pytest.mark.parametrize("crop", ["center", "focus"])
def test_prepare_square_crops(corpus, tmp_path, crop):
    src, _ = corpus
    result = prepare(src, tmp_path / "sq", name="zqx dog", repeats=3, resolution=256, crop=crop)
    assert result.folder.name == "3_zqx dog"
    for p in result.written:
        with Image.open(p) as im:
            assert im.size == (256, 256) and im.mode == "RGB", p.name


def test_prepare_none_crop_scales_large_images_down_only(corpus, tmp_path):
    src, _ = corpus
    result = prepare(src, tmp_path / "small", name="zqx", resolution=300, keep_small=True)
    for p in result.written:
        with Image.open(p) as im:
            w, h = im.size
            assert w * h <= 300 * 300 * 1.02, p.name
    with Image.open(result.folder / "tall.png") as im:  # 480 x 720: aspect ratio kept
        assert abs(im.size[0] / im.size[1] - 480 / 720) < 0.01
    assert (result.folder / "small.png").is_file()  # kept as asked, not scaled up
    with Image.open(result.folder / "small.png") as im:
        assert im.size == (100, 80)


def test_focus_crop_finds_the_detail():
    im = Image.new("RGB", (900, 300), (128, 128, 128))
    im.paste(blobs(300, 300, 3).resize((30, 30)).resize((300, 300)), (600, 0))  # detail on the right
    left, top = focus_offset(im, 300)
    assert abs(left - 600) <= 6 and top == 0  # found on a thumbnail: within a few pixels
    left, top = focus_offset(im.transpose(Image.Transpose.ROTATE_90), 300)  # the detail is now on top
    assert left == 0 and top <= 8
    flat = Image.new("RGB", (900, 300), (10, 10, 10))
    assert focus_offset(flat, 300) == (300, 0)  # no detail anywhere: the centre


def test_prepare_refusals(corpus, tmp_path):
    src, _ = corpus
    out = tmp_path / "out"
    prepare(src, out, name="zqx")
    with pytest.raises(PrepareError, match="already holds"):
        prepare(src, out, name="zqx")
    (out / "10_zqx" / "keep_me.json").write_text("{}")
    again = prepare(src, out, name="zqx", overwrite=True, resolution=256, crop="center")
    assert (out / "10_zqx" / "keep_me.json").exists() and len(again.written) == len(list((out / "10_zqx").glob("*.png")))
    with pytest.raises(PrepareError, match="originals"):
        prepare(out / "10_zqx", out, name="zqx", overwrite=True)
    with pytest.raises(PrepareError, match="cannot be a folder name"):
        prepare(src, out, name="a/b")
    with pytest.raises(PrepareError, match="not found"):
        prepare(tmp_path / "nope", out, name="x")
    with pytest.raises(PrepareError, match="No usable images"):
        prepare(tmp_path, tmp_path / "o2", name="x", resolution=100000)


def test_caption_text_ops():
    assert cap.add_trigger("a dog", "zqx") == "zqx, a dog"
    assert cap.add_trigger("zqx, a dog", "zqx") == "zqx, a dog"
    assert cap.add_prefix("a dog", "photo") == "photo, a dog" and cap.add_prefix("photo, a dog", "photo") == "photo, a dog"
    assert cap.add_suffix("a dog", "best quality") == "a dog, best quality"
    assert cap.add_suffix("", "x") == "x"
    assert cap.replace_text("a dog, a dog house", "dog", "cat") == "a cat, a cat house"
    assert cap.replace_text("a, b, c", "b", "") == "a, c"
    assert cap.remove_tags("1girl, Solo, smile", "solo, hat") == "1girl, smile"
    assert cap.tag_counts(["a, b", "b, c, b", "B"]) == [("b", 2), ("a", 1), ("B", 1), ("c", 1)]


def test_caption_bulk_edits_on_prepared_copy(corpus, tmp_path):
    src, _ = corpus
    folder = prepare(src, tmp_path / "t", name="zqx").folder
    n = len(cap.list_images(folder))
    dry = cap.bulk_edit(folder, "trigger", "sks", dry_run=True)
    assert len(dry.changed) == n and "sks" not in (folder / "good.txt").read_text()
    res = cap.bulk_edit(folder, "trigger", "sks", progress=lambda *a: None)
    assert len(res.changed) == n and (folder / "no caption.txt").read_text() == "sks"
    assert len(cap.bulk_edit(folder, "trigger", "sks").changed) == 0  # already there
    cap.bulk_edit(folder, "replace", "colour", "color")
    cap.bulk_edit(folder, "remove", "sks")
    cap.bulk_edit(folder, "suffix", "masterpiece")
    assert (folder / "good.txt").read_text(encoding="utf-8") == "zqx, a smooth color field, masterpiece"
    counts = dict(cap.folder_tag_counts(folder))
    assert counts["masterpiece"] == n and counts["zqx"] == n - 2  # not the cp1252 one nor the uncaptioned one
    path = cap.save_caption(folder / "good.png", "  new   caption ")
    assert path.read_bytes() == b"new caption" and cap.load_caption(folder / "good.png") == "new caption"


def test_phash_near_and_far():
    a = blobs(400, 300, 1)
    near = a.resize((200, 150)).convert("L").convert("RGB")
    assert phash.is_near(phash.image_hashes(a), phash.image_hashes(near)) is not None
    assert phash.is_near(phash.image_hashes(a), phash.image_hashes(blobs(400, 300, 2))) is None


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "dataset", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, encoding="utf-8", timeout=120)


def test_cli_check_prepare_captions(corpus, tmp_path):
    src, expected = corpus
    r = cli("check", src)
    assert r.returncode == 1, r.stderr  # some files have to be left out
    for name, kind in expected.items():
        if kind:
            assert name in r.stdout, name
    data = json.loads(cli("check", src, "--json").stdout)
    assert {p["file"] for p in data["problems"]} >= {n for n, k in expected.items() if k}
    assert cli("check", tmp_path / "missing").returncode == 2
    out = tmp_path / "train"
    r = cli("prepare", src, "--out", out, "--name", "zqx", "--repeats", "5", "--resolution", "256", "--crop", "focus")
    assert r.returncode == 0, r.stderr
    assert f"train_data_dir): {out}" in r.stdout and (out / "5_zqx" / "good.png").is_file()
    r = cli("check", out)
    assert r.returncode == 0 and "No problems found" not in r.stdout  # "no caption.png" still has no caption
    r = cli("prepare", src, "--out", out, "--name", "zqx", "--repeats", "5")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = cli("captions", out / "5_zqx", "--add-trigger", "sks", "--remove-tags", "a smooth colour field", "--tags")
    assert r.returncode == 0, r.stderr
    assert "trigger: changed" in r.stdout and "sks" in r.stdout
    assert (out / "5_zqx" / "good.txt").read_text() == "sks, zqx"
    assert cli("captions", tmp_path / "missing").returncode == 2
