"""A fresh install's first visit: the Training tab is set up for the built-in demo (toy model, demo
dataset, Demo preset), and pressing Start trains a LoRA with the real trainer whose samples show the
concept (stars). Debian chromium drives the real app; screenshots go to test-artifacts/."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from gui_server import app_page, app_with_real_trainer
from test_gui_training import field, playwright_api, shot

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "models" / "toy-sd15"

if playwright_api is not None:
    expect = playwright_api.expect


@pytest.fixture(scope="module")
def fresh_app(tmp_path_factory):
    """The app as on a fresh install: an empty models folder of the user's, the real trainer."""
    if not (TOY / "model_index.json").is_file():
        pytest.fail("the toy model is missing: build it with `python -m core.toy.build --out models/toy-sd15`")
    root = tmp_path_factory.mktemp("fresh")
    (root / "models").mkdir()
    with app_with_real_trainer(root, root / "models", root / "out") as url:
        yield {"url": url, "root": root}


@pytest.fixture
def page(browser, fresh_app):
    with app_page(browser, fresh_app["url"], "#start-btn") as pg:
        yield pg


def test_fresh_install_offers_the_demo(page, fresh_app):
    expect(page.locator("#starter-note")).to_contain_text("built-in demo")
    expect(field(page, "pretrained_model_name_or_path")).to_have_value(str(TOY))
    data = fresh_app["root"] / "out" / "demo-dataset"
    expect(field(page, "train_data_dir")).to_have_value(str(data))
    assert len(list((data / "10_zqx").glob("*.png"))) == 16  # written for the user, in their outputs folder
    expect(field(page, "resolution")).to_have_value("32")
    expect(page.locator("#preset input")).to_have_value("Demo (CPU)")
    expect(page.locator("#plan-box")).to_contain_text("16 images x 10 repeats = 160 per epoch")
    expect(page.locator("#plan-box")).to_contain_text("400 steps")
    shot(page, "starter-fresh-install.png")


@pytest.mark.slow  # a real 400-step training on the CPU: about 2 minutes on an idle 2-core machine
def test_pressing_start_on_a_fresh_install_teaches_the_concept(browser, page, fresh_app):
    """Start on the page, the page closed while it trains (a reload finds the run again: the browser's drawing
    would take a core of the two from the training), and a new page shows it complete, with its samples."""
    from core.runs.reader import read_run
    from core.toy import checker

    page.click("#start-btn")
    expect(page.locator("#action-msg")).to_contain_text("Started 'my_first_lora'")
    expect(page.locator("#progress")).to_contain_text("step")  # it trains
    page.close()
    run = fresh_app["root"] / "out" / "my_first_lora"
    deadline = time.time() + 900
    while (status := read_run(run).status) == "running":
        assert time.time() < deadline, "the demo did not finish in 15 minutes"
        time.sleep(1)
    with app_page(browser, fresh_app["url"], "#start-btn") as again:
        expect(again.locator("#progress")).to_contain_text("Training complete")
        assert status == "completed" and (fresh_app["root"] / "out" / "my_first_lora.safetensors").is_file()
        samples = sorted((run / "samples").glob("*.png"))
        last_step = max(s.name.split("_")[0] for s in samples)
        final = [s for s in samples if s.name.startswith(last_step)]
        assert len(final) == 3, samples
        assert checker.concept_score(final, "star") >= 2 / 3, [checker.classify(s).as_dict() for s in final]
        expect(again.locator("#samples img").first).to_be_visible()
        shot(again, "starter-trained.png")


def test_the_demo_is_offered_only_until_the_user_has_a_model(tmp_path):
    from ui.training_actions import starting_form

    models, outputs = tmp_path / "models", tmp_path / "out"
    models.mkdir()
    cfg, preset = starting_form(str(models), str(outputs))
    assert preset == "Demo (CPU)" and cfg.pretrained_model_name_or_path == str(TOY)
    assert cfg.output_name == "my_first_lora" and cfg.trigger_word == "zqx"
    (models / "my_model.safetensors").write_bytes(b"x")
    cfg, preset = starting_form(str(models), str(outputs))
    assert preset is None and cfg.pretrained_model_name_or_path == "" and cfg.output_dir == str(outputs)


def test_the_demo_note_goes_with_the_demo_preset(page, fresh_app):
    """After the start test (its own page): choosing another preset takes the demo's 'Ready to try' away; choosing
    the Demo preset again brings it back."""
    note = page.locator("#starter-note")
    expect(note).to_contain_text("built-in demo")
    expect(page.locator("#plan-box")).to_contain_text("400 steps")
    estimate = page.locator("#estimate-box")  # the last of the page's load events (it imports torch)
    expect(estimate).to_contain_text("VRAM estimate")
    expect(estimate).not_to_contain_text("computed once the page has loaded", timeout=60_000)
    page.locator("#preset input").click()
    page.get_by_role("option", name="SD1.5 character", exact=True).click()
    expect(page.locator("#preset input")).to_have_value("SD1.5 character")
    expect(note).to_be_hidden()
    page.locator("#preset input").click()
    page.get_by_role("option", name="Demo (CPU)", exact=True).click()
    expect(note).to_contain_text("built-in demo")
