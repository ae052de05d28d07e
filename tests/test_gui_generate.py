"""The Generate tab alone in a Gradio app, driven in headless Debian chromium.

Pick the tiny base model and a freshly trained tiny LoRA, generate at strength 0 and 1 (same seed:
the images differ), then make a compare grid. Screenshot: test-artifacts/generate_tab.png.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from gui_server import (CHROMIUM, app_page, choose, free_port, ml_modules_imported_by, playwright_api,
                        running_app, set_number, shot)
from tiny_models import make_tiny_sd15
from train_helpers import tiny_config, train_in_process

REPO = Path(__file__).resolve().parent.parent

if playwright_api is not None:
    expect = playwright_api.expect

APP = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import gradio as gr
from ui import generate_tab
try:
    from ui.app_ui import CSS
except Exception:
    CSS = ""
settings = json.loads(sys.argv[2])
with gr.Blocks(title="Generate tab test") as demo:
    with gr.Tab("Generate"):
        generate_tab.build(settings)
demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[3]), css=CSS, quiet=True,
                    allowed_paths=[settings["output_dir"], settings["loras_dir"]])
"""



@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_dataset):
    if playwright_api is None or not Path(CHROMIUM).exists():
        pytest.skip("needs the playwright package and Debian chromium (/usr/bin/chromium)")
    root = tmp_path_factory.mktemp("gen_gui")
    model = make_tiny_sd15(root / "models" / "tiny-sd15")
    (root / "loras").mkdir()
    train_in_process(tiny_config(model, tiny_dataset, root / "out", output_name="zqx_style", max_train_steps=10,
                                 save_every_n_steps=5, trigger_word="zqx"))
    settings = {"models_dir": str(root / "models"), "loras_dir": str(root / "loras"), "output_dir": str(root / "out")}
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-c", APP, str(REPO), json.dumps(settings), str(port)]
    with running_app(cmd, port, root, env) as (url, _):
        yield {"url": url, "root": root, "model": model}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#gen-generate") as pg:
        yield pg




def gallery_image(page) -> bytes:
    """The bytes of the first image shown in the gallery."""
    img = page.locator("#gen-gallery img").first
    expect(img).to_be_visible()
    src = img.get_attribute("src")
    return page.evaluate("""async (src) => {
        const r = await fetch(src); const b = new Uint8Array(await r.arrayBuffer());
        let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }""", src)


def generate(page, strength: float, previous_status: str) -> str:
    set_number(page, "gen-strength-1", strength)
    page.click("#gen-generate")
    status = page.locator("#gen-status")
    deadline = time.time() + 120
    while True:
        text = status.inner_text()
        if text.startswith("Done") and text != previous_status:
            return text
        err = page.locator(".toast-body")
        assert not (err.count() and err.first.is_visible()), err.first.inner_text()
        assert time.time() < deadline, text
        time.sleep(0.3)


def test_generate_tab_end_to_end(page, app):
    root = app["root"]
    choose(page, "gen-model", "tiny-sd15")
    expect(page.locator("#gen-model input").first).to_have_value("tiny-sd15 (diffusers folder)")
    choose(page, "gen-lora-1", "zqx_style — ")
    expect(page.locator("#gen-lora-info")).to_contain_text("trigger word: zqx")
    expect(page.locator("#gen-lora-2")).to_be_visible()  # a second slot appears once the first is used
    for elem, value in (("gen-width", 64), ("gen-height", 64), ("gen-steps", 4)):
        set_number(page, elem, value)
    page.locator("#gen-seed input").fill("1234")
    page.locator("#gen-prompt textarea").fill("zqx, a red circle <lora:nope:1>")  # an unknown LoRA name
    page.click("#gen-generate")
    toast = page.locator(".toast-body").first
    expect(toast).to_contain_text("no LoRA file named 'nope.safetensors'")
    expect(toast).to_contain_text(str(root / "out"))
    toast.locator("[data-testid=toast-close]").click()
    expect(page.locator(".toast-body")).to_have_count(0)  # gone (it fades out), so a new one can be told apart
    page.locator("#gen-prompt textarea").fill("zqx, a red circle")

    s0 = generate(page, 0, "")
    assert "seed 1234" in s0
    off = gallery_image(page)
    generate(page, 1, s0)
    on = gallery_image(page)
    assert off != on, "strength 1 gave the same image as strength 0"
    params = page.locator("#gen-params textarea").input_value()
    assert "<lora:zqx_style:1>" in params and "Seed: 1234" in params and "Size: 64x64" in params, params
    assert len(list((root / "out" / "generated").rglob("*.png"))) == 2
    expect(page.locator("#gen-gallery")).to_contain_text("seed 1234 · zqx_style 1")


    page.click("#gen-grid-epochs")
    expect(page.locator("#gen-grid-files")).to_contain_text("zqx_style-step00000005")
    page.locator("#gen-grid-strengths textarea, #gen-grid-strengths input").first.fill("0, 1")
    page.click("#gen-grid-make")
    expect(page.locator("#gen-grid-status")).to_contain_text("2 × 2 grid saved", timeout=120_000)
    expect(page.locator("#gen-grid-image img").first).to_be_visible()

    shot(page, "generate_tab.png")


def test_building_the_tab_imports_no_ml_libraries(tmp_path):
    assert ml_modules_imported_by("""
from ui import generate_tab
with gr.Tab('Generate'):
    generate_tab.build({'models_dir': FOLDER, 'loras_dir': '', 'output_dir': FOLDER})""", tmp_path) == []
