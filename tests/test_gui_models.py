"""Base models in the real GUI (headless Debian chromium): the Settings tab takes more model folders (a ComfyUI
tree) and finds none at the usual places here; the Training tab's base model list groups the models of every folder
by family and says what a transformer-only file needs; the Download panel fetches a catalog model from a stand-in
hub (HF_ENDPOINT on 127.0.0.1) with its progress shown, and the file joins the list.
Screenshots: test-artifacts/models_panel.png, models_list.png."""
from __future__ import annotations

import os
import sys

import pytest

from gui_server import app_page, fill, free_port, playwright_api, running_app, shot, tab
from hub_standin import Hub
from test_gui_training import CHROMIUM, REPO
from test_model_library import comfy_tree
from test_model_downloads import entry

if playwright_api is not None:
    expect = playwright_api.expect


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_sd15, tiny_dataset):
    if playwright_api is None or not os.path.exists(CHROMIUM):
        pytest.skip("needs the playwright package and Debian chromium (/usr/bin/chromium)")
    import json

    from test_model_library import write

    root = tmp_path_factory.mktemp("models_gui")
    models = root / "models"
    models.mkdir()
    content = write(root / "served.safetensors",  # an SD1.5 checkpoint's header (with tiny tensors elsewhere)
                    {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
                     "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
                     "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
                     "model.diffusion_model.padding": (1024, 1024)}).read_bytes()  # 2 MiB: about 8 s slowed down
    from test_cli_train import single_file

    real = single_file(tiny_sd15, "sd15", root).read_bytes()  # a tiny SD1.5 that trains (with its configs)
    with Hub() as hub:
        sha = hub.add("test/tiny-sd15", "tiny_sd15.safetensors", content)
        sha_real = hub.add("test/tiny-sd15", "tiny_sd15_real.safetensors", real)
        (models / "catalog.toml").write_text(
            entry("tiny-sd15", [("tiny_sd15.safetensors", content)], repo="test/tiny-sd15", shas=[sha]) + "\n"
            + entry("trainable", [("tiny_sd15_real.safetensors", real)], repo="test/tiny-sd15", shas=[sha_real]))
        settings = root / "settings.json"
        settings.write_text(json.dumps({"models_dir": str(models), "loras_dir": str(root / "out"),
                                        "outputs_dir": str(root / "out")}))
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HOME": str(root), "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("HF_TOKEN", None)
        port = free_port()
        cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)]
        with running_app(cmd, port, root, env) as (url, _):
            yield {"url": url, "root": root, "models": models, "hub": hub, "sd15": tiny_sd15, "data": tiny_dataset}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#start-btn", height=1400) as pg:
        yield pg


def test_folders_grouped_list_and_a_download_from_the_catalog(page, app):
    comfy = comfy_tree(app["root"] / "elsewhere", app["root"] / "outside")
    tab(page, "Settings")
    page.locator("#find-model-folders").click()
    expect(page.locator("#found-model-folders")).to_contain_text("No ComfyUI, AUTOMATIC1111 or Forge models folder")
    page.locator("#set-more-models textarea").fill(f"{comfy}\n{app['root'] / 'unplugged'}")
    page.locator("#save-settings").click()
    expect(page.locator("#set-more-models").locator("xpath=..")).to_be_visible()
    expect(page.get_by_text("Not found now")).to_be_visible()
    page.reload()
    expect(page.locator("#start-btn")).to_be_visible()
    tab(page, "Training")
    page.locator("#field-pretrained_model_name_or_path input").click()
    options = page.locator("#field-pretrained_model_name_or_path li[role=option]")
    expect(options.filter(has_text="Flux.1 · flux1-dev.safetensors · needs ae, clip_l, t5xxl")).to_have_count(1)
    expect(options.filter(has_text="FLUX.2 klein · flux-2-klein-base-4b.safetensors")).to_have_count(1)
    expect(options.filter(has_text="SDXL · sd_xl_base_1.0.safetensors")).to_have_count(1)
    shot(page, "models_list.png")
    page.keyboard.press("Escape")

    page.locator("#models-accordion").click()
    page.locator("#models-pick input").click()
    page.locator("#models-pick li[role=option]", has_text="Tiny tiny-sd15").click()
    expect(page.locator("#models-info")).to_contain_text("tiny_sd15.safetensors")
    expect(page.locator("#models-info")).to_contain_text("licence mit")
    app["hub"].delay = 0.25  # a slow connection: the page is reloaded while the file comes in
    page.locator("#models-get").click()
    expect(page.locator("#models-status")).to_contain_text("Downloading", timeout=30_000)
    page.reload()
    expect(page.locator("#start-btn")).to_be_visible()
    page.locator("#models-accordion").click()
    expect(page.locator("#models-status")).to_contain_text("Downloading")  # it went on without the page
    expect(page.locator("#models-status")).to_contain_text("Downloaded: ", timeout=60_000)
    expect(page.locator("#models-status")).to_contain_text("complete and verified")
    shot(page, "models_panel.png")
    assert (app["models"] / "tiny_sd15.safetensors").is_file()
    assert any(q[0] == "GET" for q in app["hub"].requests)
    page.locator("#field-pretrained_model_name_or_path input").click()
    expect(page.locator("#field-pretrained_model_name_or_path li[role=option]",
                        has_text="SD1.5 · tiny_sd15.safetensors")).to_have_count(1)


def test_train_from_a_downloaded_model(page, app):
    """A model downloaded in the panel trains: the tiny SD1.5 file, with its configs (its widths are not a released
    model's, so the form names its config folder, as a user would for an unusual checkpoint)."""
    app["hub"].delay = 0.0
    page.locator("#models-accordion").click()
    page.locator("#models-pick input").click()
    page.locator("#models-pick li[role=option]", has_text="Tiny trainable").click()
    page.locator("#models-get").click()
    expect(page.locator("#models-status")).to_contain_text("Downloaded: Tiny trainable", timeout=60_000)
    page.locator("#adv-model").click()
    fill(page, "base_config_dir", app["sd15"])
    fill(page, "pretrained_model_name_or_path", app["models"] / "tiny_sd15_real.safetensors", enter=True)
    fill(page, "train_data_dir", app["data"])
    fill(page, "output_name", "from_download")
    fill(page, "resolution", 64)
    fill(page, "train_batch_size", 4)
    fill(page, "max_train_epochs", 1)
    fill(page, "sample_prompts", "")
    page.click("#start-btn")
    expect(page.locator("#action-msg")).to_contain_text("Started 'from_download'")
    expect(page.locator("#progress")).to_contain_text("Training complete", timeout=300_000)
    assert (app["root"] / "out" / "from_download.safetensors").is_file()
