"""The Training tab's guided start in Debian chromium: it fills the form for a subject, family, dataset and a VRAM
chosen by hand (the test machine has no GPU), and the live VRAM estimate and the guardrail warnings follow the
form. Uses the app of test_gui_training (fake trainer). Screenshot: test-artifacts/guided_start.png."""
from __future__ import annotations

import re

from test_gui_training import app, browser, field, fill, page, shot  # noqa: F401 (pytest fixtures)
from test_gui_training import playwright_api

if playwright_api is not None:
    expect = playwright_api.expect


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_guided_start_fills_the_form_and_shows_estimate_and_warnings(page, app):
    box = page.locator("#guided-start")
    expect(box).to_contain_text("Guided start")
    estimate = page.locator("#estimate-box")
    warnings = page.locator("#guardrails-box")
    choose(page, "guided-subject", "art style")
    choose(page, "guided-family", "SDXL")
    choose(page, "guided-vram", "12 GB")
    page.locator("#guided-data textarea, #guided-data input").first.fill(str(app["root"] / "data"))
    page.click("#guided-fill")
    result = page.locator("#guided-result")
    expect(result).to_contain_text("Filled in for SDXL, art style, 12 GB, chosen by hand, 4 images")
    expect(field(page, "resolution")).to_have_value("1024")
    expect(field(page, "network_dim")).to_have_value("64")  # a style's rank: twice the character's 32
    expect(field(page, "train_data_dir")).to_have_value(str(app["root"] / "data"))
    expect(page.locator("#plan-box")).to_contain_text("max_train_steps = 400 steps")  # 4 images x 60 uses, at least 400
    expect(estimate).to_contain_text("VRAM estimate")
    expect(estimate).to_contain_text("Fits in 12 GB (12 GB, chosen by hand)")
    expect(warnings).to_contain_text("Only 4 images for an art style")
    expect(warnings).to_contain_text("trigger_word is empty")
    fill(page, "trigger_word", "zqx")
    expect(warnings).not_to_contain_text("trigger_word is empty")
    fill(page, "resolution", "768")  # every value stays editable; the checks follow
    expect(warnings).to_contain_text("below SDXL's native 1024 px")
    fill(page, "resolution", "1024")
    choose(page, "guided-vram", "8 GB")
    expect(estimate).to_contain_text("Does not fit in 8 GB")
    expect(estimate).to_contain_text("Cheapest changes")
    expect(estimate).to_contain_text("(fits)")
    page.locator("#guided-result details summary").click()
    expect(result).to_contain_text("learning_rate = 1e-4")
    shot(page, "guided_start.png")


def test_preset_and_guided_start_leave_nothing_of_an_earlier_preset(page, app):
    """The Demo preset sets conv_dim, lora_ff and 32 px sample prompts; the next preset and the guided start reset
    what they do not choose to the defaults, and keep what the user typed (trigger word, output name, folder)."""
    choose(page, "preset", "Demo (CPU)")
    page.locator("#adv-network").get_by_text("LoRA network").click()
    expect(field(page, "conv_dim")).to_have_value("8")
    expect(field(page, "lora_ff")).to_be_checked()
    expect(field(page, "sample_prompts")).to_have_value(re.compile("--w 32"))
    fill(page, "trigger_word", "zqx")
    fill(page, "output_name", "mine")
    choose(page, "preset", "SD1.5 character")
    expect(field(page, "conv_dim")).to_have_value("0")
    expect(field(page, "lora_ff")).not_to_be_checked()
    expect(field(page, "resolution")).to_have_value("512")
    expect(field(page, "sample_prompts")).to_have_value("")  # the Demo's prompts, unchanged: reset too
    choose(page, "preset", "Demo (CPU)")
    expect(field(page, "conv_dim")).to_have_value("8")
    fill(page, "sample_every_n_epochs", 3)
    choose(page, "guided-family", "SDXL")
    choose(page, "guided-vram", "12 GB")
    page.locator("#guided-data textarea, #guided-data input").first.fill(str(app["root"] / "data"))
    page.click("#guided-fill")
    expect(page.locator("#guided-result")).to_contain_text("Filled in for SDXL")
    expect(field(page, "resolution")).to_have_value("1024")
    expect(field(page, "conv_dim")).to_have_value("0")  # the schema default, not the Demo's 8
    expect(field(page, "conv_alpha")).to_have_value("1")
    expect(field(page, "lora_ff")).not_to_be_checked()
    expect(field(page, "lora_proj")).not_to_be_checked()
    expect(field(page, "sample_every_n_epochs")).to_have_value("0")  # the guided start's (it samples by steps)
    expect(field(page, "max_train_epochs")).to_have_value("10")  # the default: the steps decide
    expect(field(page, "sample_prompts")).to_have_value("")
    expect(field(page, "trigger_word")).to_have_value("zqx")  # the user's own inputs stay
    expect(field(page, "output_name")).to_have_value("mine")
    expect(field(page, "train_data_dir")).to_have_value(str(app["root"] / "data"))
    expect(page.locator("#preset input")).to_have_value("")
