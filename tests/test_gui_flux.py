"""Flux in the real GUI (headless Debian chromium, the real trainer): the form shows the Flux settings for a
Flux base and asks for (and finds) the CLIP-L / T5-XXL / AE files a transformer-only file needs; a tiny Flux
trains to "completed" with sample images; the Generate tab draws with the new LoRA.
Screenshots: test-artifacts/flux_form.png, flux_parts.png, flux_trained.png, flux_generate.png."""
from __future__ import annotations

from pathlib import Path

import pytest

from gui_server import app_page, app_with_real_trainer, field, fill, playwright_api, shot, shown
from test_gui_training import CHROMIUM
from tiny_flux import make_flux_single_files, make_tiny_flux

if playwright_api is not None:
    expect = playwright_api.expect


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_dataset):
    if playwright_api is None or not Path(CHROMIUM).exists():
        pytest.skip("needs the playwright package and Debian chromium (/usr/bin/chromium)")
    root = tmp_path_factory.mktemp("flux_gui")
    models = root / "models"
    make_tiny_flux("dev", models / "tiny-flux-dev")
    files = make_flux_single_files("dev")
    (models / "unet").mkdir()
    (models / "text_encoders").mkdir()
    (models / "vae").mkdir()
    (models / "unet" / "flux1-dev.safetensors").symlink_to(files / "flux1-dev.safetensors")
    (models / "text_encoders" / "clip_l.safetensors").symlink_to(files / "clip_l.safetensors")
    (models / "text_encoders" / "t5xxl_fp8_e4m3fn.safetensors").symlink_to(files / "t5xxl_fp16.safetensors")
    (models / "text_encoders" / "t5xxl_fp16.safetensors").symlink_to(files / "t5xxl_fp16.safetensors")
    (models / "vae" / "ae.safetensors").symlink_to(files / "ae.safetensors")
    with app_with_real_trainer(root, models, root / "out") as url:
        yield {"url": url, "root": root, "models": models, "data": tiny_dataset}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#start-btn", height=1100) as pg:
        yield pg



def test_flux_form_trains_and_generates(page, app):
    models = app["models"]
    fill(page, "pretrained_model_name_or_path", models / "tiny-flux-dev", enter=True)
    expect(page.locator("#adv-flux")).to_be_visible()
    for sd_only in ("min_snr_gamma", "clip_skip", "conv_dim"):
        expect(page.locator(f"#field-{sd_only}")).to_be_hidden()
    expect(page.locator("#field-clip_l")).to_be_hidden()  # a diffusers folder has its text encoders
    page.locator("#adv-flux").click()
    expect(page.locator("#field-timestep_sampling")).to_be_visible()
    shot(page, "flux_form.png")

    # a transformer-only file: the three part files appear, found in the models folder
    fill(page, "pretrained_model_name_or_path", models / "unet" / "flux1-dev.safetensors", enter=True)
    for name, file in (("clip_l", "clip_l.safetensors"), ("t5xxl", "t5xxl_fp16.safetensors"), ("ae", "ae.safetensors")):
        expect(page.locator(f"#field-{name}")).to_be_visible()
        expect(field(page, name)).to_have_value(shown(next(models.glob(f"*/{file}"))))
    shot(page, "flux_parts.png")
    fill(page, "t5xxl", "")
    page.click("#start-btn")
    expect(page.locator("#form-errors-box")).to_contain_text("holds only the transformer")
    expect(page.locator("#form-errors-box")).to_contain_text("T5-XXL")

    # back to the tiny diffusers folder (its T5 is tiny), and train
    fill(page, "pretrained_model_name_or_path", models / "tiny-flux-dev", enter=True)
    expect(page.locator("#field-clip_l")).to_be_hidden()
    fill(page, "train_data_dir", app["data"])
    fill(page, "output_name", "flux_gui")
    fill(page, "resolution", 64)
    fill(page, "train_batch_size", 4)
    fill(page, "max_train_epochs", 1)
    fill(page, "learning_rate", 0.01)
    fill(page, "t5xxl_max_token_length", 32)
    fill(page, "sample_prompts", "zqx, a red square --w 64 --h 64 --s 3")
    page.click("#start-btn")
    expect(page.locator("#action-msg")).to_contain_text("Started 'flux_gui'")
    expect(page.locator("#progress")).to_contain_text("Training complete", timeout=600_000)
    expect(page.locator("#samples img").first).to_be_visible()
    run = app["root"] / "out" / "flux_gui"
    assert sorted((run / "samples").glob("*.png")), "no sample images"
    assert (app["root"] / "out" / "flux_gui.safetensors").is_file()
    shot(page, "flux_trained.png")

    # Generate with the new LoRA
    page.get_by_role("tab", name="Generate").click()
    box = page.locator("#gen-model input").first
    box.click()
    page.locator("#gen-model li[role=option]", has_text="tiny-flux-dev").first.click()
    expect(page.locator("#gen-negative")).to_be_hidden()
    expect(page.locator("#gen-cfg")).to_contain_text("Distilled guidance")
    lora = page.locator("#gen-lora-1 input").first
    lora.click()
    page.locator("#gen-lora-1 li[role=option]", has_text="flux_gui").first.click()
    for elem, value in (("gen-width", 64), ("gen-height", 64), ("gen-steps", 3)):
        num = page.locator(f"#{elem} input[type=number]").first
        num.fill(str(value))
        num.press("Tab")
    page.locator("#gen-prompt textarea").fill("zqx, a red square")
    page.click("#gen-generate")
    expect(page.locator("#gen-status")).to_contain_text("Done: 1 image", timeout=180_000)
    expect(page.locator("#gen-gallery img").first).to_be_visible()
    params = page.locator("#gen-params textarea")
    expect(params).to_have_value(__import__("re").compile(r"<lora:flux_gui:1>[\s\S]*Distilled CFG Scale: 3\.5"))
    shot(page, "flux_generate.png")
