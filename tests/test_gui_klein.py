"""FLUX.2 klein in the real GUI (headless Debian chromium, the real trainer): a transformer-only klein file asks for
(and finds) its Qwen3 and FLUX.2 autoencoder files, not Flux.1's; a tiny klein folder trains to "completed" with
sample images, and the Generate tab draws with the LoRA (CFG, negative prompt). Screenshots:
test-artifacts/klein_parts.png, klein_trained.png, klein_generate.png."""
from __future__ import annotations

from pathlib import Path

import pytest

from gui_server import app_page, app_with_real_trainer, field, fill, playwright_api, shot, shown
from test_gui_training import CHROMIUM
from tiny_flux import make_flux_single_files
from tiny_klein import make_klein_single_files, make_tiny_klein

if playwright_api is not None:
    expect = playwright_api.expect


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_dataset):
    if playwright_api is None or not Path(CHROMIUM).exists():
        pytest.skip("needs the playwright package and Debian chromium (/usr/bin/chromium)")
    root = tmp_path_factory.mktemp("klein_gui")
    models = root / "models"
    make_tiny_klein("base", models / "tiny-klein-base")
    files, flux = make_klein_single_files(), make_flux_single_files("dev")
    for sub, name, src in (("diffusion_models", "flux-2-klein-base-4b.safetensors", files),
                           ("text_encoders", "qwen_3_4b.safetensors", files), ("vae", "flux2-vae.safetensors", files),
                           ("vae", "ae.safetensors", flux), ("text_encoders", "clip_l.safetensors", flux)):
        (models / sub).mkdir(parents=True, exist_ok=True)
        (models / sub / name).symlink_to(src / name)
    with app_with_real_trainer(root, models, root / "out") as url:
        yield {"url": url, "root": root, "models": models, "data": tiny_dataset}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#start-btn", height=1100) as pg:
        yield pg


def test_klein_form_finds_its_parts_and_trains(page, app):
    models = app["models"]
    # the tiny file's width is no released klein's: its configs say what it is (a real file is known by its width)
    page.locator("#adv-model").click()
    fill(page, "base_config_dir", make_klein_single_files() / "config")
    fill(page, "pretrained_model_name_or_path", models / "diffusion_models" / "flux-2-klein-base-4b.safetensors",
         enter=True)
    for name, file in (("qwen3", "text_encoders/qwen_3_4b.safetensors"), ("ae", "vae/flux2-vae.safetensors")):
        expect(page.locator(f"#field-{name}")).to_be_visible()
        expect(field(page, name)).to_have_value(shown(models / file))  # the file's label: its name, what it is
    for flux1 in ("clip_l", "t5xxl", "guidance_scale", "t5xxl_max_token_length"):
        expect(page.locator(f"#field-{flux1}")).to_be_hidden()
    shot(page, "klein_parts.png")

    fill(page, "base_config_dir", "")
    fill(page, "pretrained_model_name_or_path", models / "tiny-klein-base", enter=True)
    expect(page.locator("#field-qwen3")).to_be_hidden()
    fill(page, "train_data_dir", app["data"])
    fill(page, "output_name", "klein_gui")
    fill(page, "resolution", 64)
    fill(page, "train_batch_size", 4)
    fill(page, "max_train_epochs", 1)
    fill(page, "learning_rate", 0.01)
    fill(page, "sample_prompts", "zqx, a red square --w 64 --h 64 --s 3 --l 4")
    page.click("#start-btn")
    expect(page.locator("#action-msg")).to_contain_text("Started 'klein_gui'")
    expect(page.locator("#progress")).to_contain_text("Training complete", timeout=600_000)
    expect(page.locator("#samples img").first).to_be_visible()
    assert sorted((app["root"] / "out" / "klein_gui" / "samples").glob("*.png")), "no sample images"
    assert (app["root"] / "out" / "klein_gui.safetensors").is_file()
    shot(page, "klein_trained.png")

    # Generate with the new LoRA: klein base samples with CFG and a negative prompt
    page.get_by_role("tab", name="Generate").click()
    box = page.locator("#gen-model input").first
    box.click()
    page.locator("#gen-model li[role=option]", has_text="tiny-klein-base").first.click()
    expect(page.locator("#gen-negative")).to_be_visible()
    expect(page.locator("#gen-cfg")).to_contain_text("klein base")
    lora = page.locator("#gen-lora-1 input").first
    lora.click()
    page.locator("#gen-lora-1 li[role=option]", has_text="klein_gui").first.click()
    for elem, value in (("gen-width", 64), ("gen-height", 64), ("gen-steps", 3)):
        num = page.locator(f"#{elem} input[type=number]").first
        num.fill(str(value))
        num.press("Tab")
    page.locator("#gen-prompt textarea").fill("zqx, a red square")
    page.locator("#gen-negative textarea").fill("blurry")
    page.click("#gen-generate")
    expect(page.locator("#gen-status")).to_contain_text("Done: 1 image", timeout=180_000)
    expect(page.locator("#gen-gallery img").first).to_be_visible()
    params = page.locator("#gen-params textarea")
    expect(params).to_have_value(__import__("re").compile(r"<lora:klein_gui:1>[\s\S]*Negative prompt: blurry"
                                                           r"[\s\S]*CFG scale: 4"))
    shot(page, "klein_generate.png")
