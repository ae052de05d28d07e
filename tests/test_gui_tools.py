"""The Tools tab (and the Generate tab's "About the chosen LoRAs") in the real app, driven in headless chromium.

A tiny SD1.5 LoRA (2 training steps) is inspected, checked against the tiny SD1.5 (fits) and SDXL (another family),
merged (at 0.5, then two LoRAs, then into the SD1.5 base: a checkpoint), resized to rank 1, converted to the
diffusers form, extracted back from the merged checkpoint; an existing output name shows an error line.
Screenshots: test-artifacts/tools_inspect.png, tools_merge.png, generate_lora_info.png.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gui_server import (CHROMIUM, app_page, choose, fill_id, free_port, ml_modules_imported_by, playwright_api,
                        running_app, set_number, shot, tab)
from tiny_models import make_tiny_sd15, make_tiny_sdxl
from train_helpers import tiny_config, train_in_process

REPO = Path(__file__).resolve().parent.parent
GREEN, RED = "rgb(21, 128, 61)", "rgb(185, 28, 28)"

if playwright_api is not None:
    expect = playwright_api.expect



@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_dataset):
    if playwright_api is None or not Path(CHROMIUM).exists():
        pytest.skip("needs the playwright package and Debian chromium (/usr/bin/chromium)")
    root = tmp_path_factory.mktemp("tools_gui")
    sd15 = make_tiny_sd15(root / "models" / "tiny-sd15")
    make_tiny_sdxl(root / "models" / "tiny-sdxl")
    (root / "loras").mkdir()
    train_in_process(tiny_config(sd15, tiny_dataset, root / "out", output_name="zqx_style", max_train_steps=2,
                                 trigger_word="zqx"))
    from safetensors.torch import load_file, save_file

    save_file(load_file(root / "out" / "zqx_style.safetensors"), root / "loras" / "nometa_lora.safetensors")
    settings = root / "settings.json"
    settings.write_text(json.dumps({"models_dir": str(root / "models"), "loras_dir": str(root / "loras"),
                                    "outputs_dir": str(root / "out")}))
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)]
    with running_app(cmd, port, root, env) as (url, _):
        yield {"url": url, "root": root, "sd15": sd15}


@pytest.fixture
def page(browser, app):
    with app_page(browser, app["url"], "#tools-inspect-run", tab="Tools") as pg:
        yield pg






def color(locator) -> str:
    return locator.evaluate("e => getComputedStyle(e).color")



def no_traceback(page) -> None:
    assert "Traceback" not in page.locator("body").inner_text()


def test_tools_tab_end_to_end(page, app):
    root, loras, models = app["root"], app["root"] / "loras", app["root"] / "models"

    # Inspect: picking a LoRA fills the tables
    choose(page, "tools-inspect-lora", "zqx_style — ")
    summary = page.locator("#tools-inspect-summary")
    expect(summary).to_contain_text("SD1.5")
    rank_row = summary.locator("tr", has_text="Rank")
    expect(rank_row.first).to_contain_text("4")
    expect(summary.locator("tr", has_text="Trigger words")).to_contain_text("zqx")
    expect(summary.locator("tr", has_text="Dataset folder")).to_contain_text("10_zqx: 4 images × 10 repeats")
    expect(page.locator("#tools-inspect-parts tr", has_text="UNet")).to_contain_text("128")
    expect(page.locator("#tools-inspect-parts")).to_contain_text("a red square")
    expect(page.locator("#tools-inspect-status .lw-ok")).to_contain_text("No problems")
    page.locator("#tools-inspect-raw").get_by_text("Raw metadata (JSON)").click()
    expect(page.locator("#tools-inspect-json")).to_contain_text("ss_network_dim")
    shot(page, "tools_inspect.png")
    fill_id(page, "tools-inspect-path", root / "loras" / "nometa_lora.safetensors")  # a path wins over the list
    page.click("#tools-inspect-run")
    # no metadata: the family comes from the key names (lora_te_ / lora_unet_ in diffusers paths: SD 1.5)
    expect(page.locator("#tools-inspect-summary")).to_contain_text("This file holds no training metadata.")
    expect(page.locator("#tools-inspect-summary")).to_contain_text("SD1.5")
    fill_id(page, "tools-inspect-path", root / "nope.safetensors")  # a path that is not there: an error line
    page.click("#tools-inspect-run")
    expect(page.locator("#tools-inspect-status .lw-err")).to_be_visible()
    no_traceback(page)

    # Check against the SD1.5 base (fits, green) and the SDXL one (another family, red)
    tab(page, "Check")
    choose(page, "tools-check-lora", "zqx_style — ")
    choose(page, "tools-check-model", "tiny-sd15")
    page.click("#tools-check-run")
    ok = page.locator("#tools-check-result .lw-ok")
    expect(ok).to_contain_text("All 140 modules of zqx_style.safetensors map to layers")
    assert color(ok) == GREEN
    choose(page, "tools-check-model", "tiny-sdxl")
    page.click("#tools-check-run")
    bad = page.locator("#tools-check-result .lw-err")
    expect(bad).to_contain_text("SD1.5 LoRA; the base model is SDXL")
    assert color(bad) == RED

    # Merge: one LoRA at 0.5, then two LoRAs (the new file is in the lists), then an existing name, then into the base
    tab(page, "Merge")
    choose(page, "tools-merge-lora-1", "zqx_style — ")
    set_number(page, "tools-merge-strength-1", 0.5)
    fill_id(page, "tools-merge-out", "zqx_half")
    page.click("#tools-merge-run")
    result = page.locator("#tools-merge-result")
    expect(result).to_contain_text("140 modules written")
    expect(result).to_contain_text("0.5 x zqx_style.safetensors")
    assert (loras / "zqx_half.safetensors").is_file()
    set_number(page, "tools-merge-strength-1", 1)
    choose(page, "tools-merge-lora-2", "zqx_half — ")  # refreshed after the first merge
    fill_id(page, "tools-merge-out", "zqx_mix")
    page.click("#tools-merge-run")
    expect(result).to_contain_text("1 x zqx_style.safetensors + 1 x zqx_half.safetensors")
    assert (loras / "zqx_mix.safetensors").is_file()
    before = (loras / "zqx_mix.safetensors").stat().st_mtime_ns
    page.click("#tools-merge-run")  # the same name again, without Overwrite
    err = result.locator(".lw-err")
    expect(err).to_contain_text("zqx_mix.safetensors already exists")
    expect(err).to_contain_text('tick "Overwrite"')
    assert color(err) == RED
    assert (loras / "zqx_mix.safetensors").stat().st_mtime_ns == before
    no_traceback(page)
    choose(page, "tools-merge-base", "tiny-sd15")
    fill_id(page, "tools-merge-out", "tiny_zqx")
    page.click("#tools-merge-run")
    expect(result).to_contain_text("modules applied to tiny-sd15", timeout=60_000)
    assert (models / "tiny_zqx.safetensors").is_file()
    shot(page, "tools_merge.png")

    # Resize to rank 1
    tab(page, "Resize")
    choose(page, "tools-resize-lora", "zqx_style — ")
    set_number(page, "tools-resize-rank", 1)
    fill_id(page, "tools-resize-out", "zqx_r1")
    page.click("#tools-resize-run")
    expect(page.locator("#tools-resize-result")).to_contain_text("140 modules resized (rank 1); ranks now 1")
    assert (loras / "zqx_r1.safetensors").is_file()

    # Convert to diffusers keys, with the default output name
    tab(page, "Convert")
    choose(page, "tools-convert-lora", "zqx_style — ")
    page.click("#tools-convert-run")
    expect(page.locator("#tools-convert-result")).to_contain_text("written in the diffusers form")
    assert (loras / "zqx_style_diffusers.safetensors").is_file()

    # Extract a LoRA back from the merged checkpoint (a non-standard single file: its configs are the base's)
    tab(page, "Extract")
    choose(page, "tools-extract-base", "tiny-sd15")
    choose(page, "tools-extract-tuned", "tiny_zqx.safetensors")
    set_number(page, "tools-extract-rank", 4)
    fill_id(page, "tools-extract-config", app["sd15"])
    fill_id(page, "tools-extract-out", "zqx_extracted")
    page.click("#tools-extract-run")
    expect(page.locator("#tools-extract-result .lw-ok")).to_contain_text("modules extracted", timeout=60_000)
    assert (loras / "zqx_extracted.safetensors").is_file()
    no_traceback(page)

    # Generate: "About the chosen LoRAs", and a warning when the LoRA does not fit the base model
    tab(page, "Generate")
    choose(page, "gen-model", "tiny-sdxl")
    choose(page, "gen-lora-1", "zqx_style — ")
    page.locator("#gen-lora-about-box").get_by_text("About the chosen LoRAs").click()
    expect(page.locator("#gen-lora-info")).to_contain_text("trained for SD1.5 but the base model is SDXL")
    expect(page.locator("#gen-lora-about")).to_contain_text("zqx_style.safetensors")
    expect(page.locator("#gen-lora-check .lw-warn")).to_have_count(0)  # the notes above say it already
    choose(page, "gen-lora-2", "nometa_lora — ")  # no metadata: only the check can tell
    expect(page.locator("#gen-lora-check .lw-warn")).to_contain_text(
        "nometa_lora.safetensors is an SD1.5 LoRA; the base model is SDXL")
    about = page.locator("#gen-lora-about")
    expect(about).to_contain_text("SD1.5")
    expect(about.locator("tr", has_text="Rank").first).to_contain_text("4")
    page.locator("#gen-lora-about").scroll_into_view_if_needed()
    shot(page, "generate_lora_info.png")
    choose(page, "gen-model", "tiny-sd15")
    expect(page.locator("#gen-lora-check .lw-warn")).to_have_count(0)  # both fit SD1.5
    no_traceback(page)


def test_building_the_tab_imports_no_ml_libraries(tmp_path):
    assert ml_modules_imported_by("""
from ui import tools_tab
from ui.context import AppContext
from ui.settings import Settings
ctx = AppContext(Settings(models_dir=FOLDER, loras_dir=FOLDER, outputs_dir=FOLDER, path=FOLDER + '/s.json'))
ctx.blocks = demo
with gr.Tab('Tools'):
    tools_tab.build(ctx)""", tmp_path) == []


def test_output_paths_and_gui_words(tmp_path):
    from ui.tools_view import gui_words, output_path

    assert output_path(str(tmp_path), "", "a_merged") == str(tmp_path / "a_merged.safetensors")
    assert output_path(str(tmp_path), "b.safetensors", "x") == str(tmp_path / "b.safetensors")
    assert output_path(str(tmp_path), str(tmp_path / "sub" / "c"), "x") == str(tmp_path / "sub" / "c.safetensors")
    assert gui_words("x already exists; choose another name or pass --overwrite") == \
        'x already exists; choose another name or tick "Overwrite"'
