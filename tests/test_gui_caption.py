"""The Captioning tab of the app, driven in headless Debian chromium.

Caption a folder of 3 images (and one broken file) with a tiny WD14 tagger found in the models folder,
see the progress, the summary with the failed file and the images with their captions; then ask for a
model that is not downloaded (the tests run offline) and see what to do. Screenshots:
test-artifacts/caption_tab.png, test-artifacts/caption_tab_offline.png.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gui_server import app_page, ml_modules_imported_by, running_app
from test_gui_training import free_port, playwright_api, shot
from tiny_captioners import make_images, make_tiny_wd14

REPO = Path(__file__).resolve().parent.parent
if playwright_api is not None:
    expect = playwright_api.expect

@pytest.fixture(scope="module")
def app(tmp_path_factory, browser):
    root = tmp_path_factory.mktemp("cap_gui")
    make_tiny_wd14(root / "models" / "captioners" / "tiny-wd14")
    data = root / "my_dataset"
    make_images(data / "10_zqx", size=96)
    (data / "10_zqx" / "notes.png").write_bytes(b"not an image")
    settings = root / "settings.json"
    settings.write_text(json.dumps({"models_dir": str(root / "models"), "outputs_dir": str(root / "out")}))
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)]
    with running_app(cmd, port, root, env) as (url, _):
        yield {"url": url, "root": root, "data": data}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#cap-start", tab="Captioning") as pg:
        yield pg


def test_caption_a_folder_with_wd14(page, app):
    data = app["data"]
    page.locator("#cap-folder textarea, #cap-folder input").first.fill(str(data))
    page.locator("#cap-backend label", has_text="WD14").click()
    expect(page.locator("#cap-backend-info")).to_contain_text("Booru tags")
    expect(page.locator("#cap-wd14-threshold")).to_be_visible()
    expect(page.locator("#cap-blip-num-beams")).to_be_hidden()
    box = page.locator("#cap-model input").first
    box.click()
    page.locator("#cap-model li[role=option]", has_text="tiny-wd14 (local folder)").click()
    page.locator("#cap-prefix textarea, #cap-prefix input").first.fill("zqx, ")
    page.click("#cap-start")
    summary = page.locator("#cap-summary")
    expect(summary).to_contain_text("Captioned 3, skipped 0, failed 1", timeout=90_000)
    expect(summary).to_contain_text("notes.png")
    expect(summary).to_contain_text("cannot be read as an image")
    expect(page.locator("#cap-status")).to_contain_text("4/4 images")
    gallery = page.locator("#cap-gallery")
    expect(gallery).to_contain_text("zqx, hatsune miku, red hair, 1girl")
    expect(page.locator("#cap-gallery img")).to_have_count(3)
    table = page.locator("#cap-table")
    expect(table).to_contain_text("zqx, hatsune miku, red hair, 1girl, simple background, solo, ^_^")
    expect(table).to_contain_text("✗ cannot be read as an image")
    expect(page.locator("#cap-start")).to_be_enabled()
    assert (data / "10_zqx" / "red.txt").read_text(encoding="utf-8").startswith("zqx, hatsune miku, red hair")
    shot(page, "caption_tab.png")

    # the same folder again: the captioned images are skipped, nothing to load
    page.click("#cap-start")
    expect(summary).to_contain_text("Captioned 0, skipped 3, failed 1", timeout=60_000)


def test_a_model_that_is_not_downloaded(page, app):
    page.locator("#cap-folder textarea, #cap-folder input").first.fill(str(app["data"]))
    page.locator("#cap-backend label", has_text="Florence-2").click()
    expect(page.locator("#cap-model input").first).to_have_value(
        "florence-community/Florence-2-large (downloaded on first use)")
    expect(page.locator("#cap-florence2-task")).to_be_visible()
    page.locator("#cap-existing label", has_text="Overwrite").click()
    page.click("#cap-start")
    summary = page.locator("#cap-summary")
    expect(summary).to_contain_text("Could not get florence-community/Florence-2-large", timeout=60_000)
    expect(summary).to_contain_text("hf download florence-community/Florence-2-large --local-dir")
    expect(page.locator("#cap-start")).to_be_enabled()
    shot(page, "caption_tab_offline.png")


def test_building_the_tab_imports_no_ml_libraries(tmp_path):
    assert ml_modules_imported_by("""
from ui import caption_tab
from ui.context import AppContext
from ui.settings import Settings
caption_tab.build(AppContext(settings=Settings(models_dir=FOLDER)))""", tmp_path) == []
