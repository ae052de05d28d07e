"""The Dataset tab of the real GUI in headless Debian chromium.

Upload good and bad pictures, read the check report, make the training folder, edit a caption with the
keyboard (Enter, Page Down) and check the .txt on disk, add the trigger word to all captions.
Screenshots go to test-artifacts/dataset_*.png.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from dataset_corpus import make_corpus
from gui_server import app_page, running_app
from test_gui_training import free_port, playwright_api, shot

REPO = Path(__file__).resolve().parent.parent
UPLOAD = ["good.png", "good.txt", "rotated.jpg", "rotated.txt", "cmyk.jpg", "notes.png", "small.png",
          "no caption.png", "truncated.png"]
if playwright_api is not None:
    expect = playwright_api.expect


@pytest.fixture(scope="module")
def app(tmp_path_factory, browser):
    root = tmp_path_factory.mktemp("ds_gui")
    make_corpus(root / "corpus")
    settings = root / "settings.json"
    settings.write_text(json.dumps({"outputs_dir": str(root / "out"), "models_dir": str(root / "models"),
                                    "datasets_dir": str(root / "datasets")}))
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)]
    with running_app(cmd, port, root, env) as (url, _):
        yield {"url": url, "root": root}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#ds-check", tab="Dataset") as pg:
        yield pg


def caption_box(page):
    return page.locator("#ds-caption textarea").first


def test_dataset_tab_end_to_end(page, app):
    root = app["root"]
    staged = root / "to_upload"
    staged.mkdir()
    for name in UPLOAD:  # the upload keeps the file names
        shutil.copyfile(root / "corpus" / name, staged / name)
    page.locator("#ds-upload input[type=file]").set_input_files([str(staged / n) for n in UPLOAD])
    summary = page.locator("#ds-summary")
    expect(summary).to_contain_text("Checked", timeout=60_000)
    report = page.locator("#ds-report")
    for name in ("notes.png", "small.png", "truncated.png", "rotated.jpg", "cmyk.jpg", "no caption.png"):
        expect(report).to_contain_text(name)
    expect(report).to_contain_text("Is not an image although its name ends in .png")
    uploaded = Path(page.locator("#ds-src textarea, #ds-src input").first.input_value())
    assert uploaded.parent == root / "datasets" / "uploads" and (uploaded / "good.txt").is_file()
    shot(page, "dataset_checked.png")

    page.locator("#ds-name textarea, #ds-name input").first.fill("zqx")
    page.get_by_label("Square around the most detail").check()
    page.click("#ds-prepare")
    expect(page.locator("#ds-prep-msg")).to_contain_text("Done", timeout=60_000)
    folder = root / "datasets" / "zqx" / "10_zqx"
    images = sorted(p.name for p in folder.iterdir() if p.suffix != ".txt")
    assert images == ["cmyk.png", "good.png", "no caption.png", "rotated.png"], images
    expect(page.locator("#ds-prepared textarea, #ds-prepared input").first).to_have_value(str(root / "datasets" / "zqx"))
    expect(page.locator("#ds-position")).to_contain_text("Picture 1 of 4")
    expect(page.locator("#ds-gallery img")).to_have_count(4)
    shot(page, "dataset_prepared.png")

    box = caption_box(page)
    expect(box).to_have_value("")  # cmyk.jpg came without a caption
    box.fill("zqx, a print picture")
    box.press("Enter")  # save and next
    expect(page.locator("#ds-position")).to_contain_text("Picture 2 of 4")
    assert (folder / "cmyk.txt").read_text(encoding="utf-8") == "zqx, a print picture"
    box = caption_box(page)
    box.fill("zqx, ein grünes Bild")
    box.press("PageDown")
    expect(page.locator("#ds-position")).to_contain_text("Picture 3 of 4")
    assert (folder / "good.txt").read_text(encoding="utf-8") == "zqx, ein grünes Bild"
    page.locator("#ds-gallery img").nth(0).click()
    expect(page.locator("#ds-position")).to_contain_text("cmyk.png")
    expect(caption_box(page)).to_have_value("zqx, a print picture")

    page.locator("#ds-bulk-trigger textarea, #ds-bulk-trigger input").first.fill("sks")
    page.click("#ds-bulk-trigger-btn")
    expect(page.locator("#ds-bulk-msg")).to_contain_text("Changed 4 of 4 captions")
    for name in images:
        text = (folder / name).with_suffix(".txt").read_text(encoding="utf-8")
        assert text.startswith("sks"), (name, text)
    expect(page.locator("#ds-tags")).to_contain_text("sks")
    expect(caption_box(page)).to_have_value("sks, zqx, a print picture")
    shot(page, "dataset_captions.png")

    # hand the prepared folder to the Training tab
    page.click("#ds-use")
    expect(page.locator("#field-train_data_dir textarea, #field-train_data_dir input").first).to_have_value(
        str(root / "datasets" / "zqx"))
    expect(page.locator("#field-trigger_word textarea, #field-trigger_word input").first).to_have_value("zqx")
    expect(page.locator("#plan-box")).to_contain_text("4 images x 10 repeats")
    shot(page, "dataset_to_training.png")
