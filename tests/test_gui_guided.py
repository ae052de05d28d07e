"""The Training tab's guided start in Debian chromium: it fills the form for a subject, family, dataset and a VRAM
chosen by hand (the test machine has no GPU), and the live VRAM estimate and the guardrail warnings follow the
form. Uses the app of test_gui_training (fake trainer). Screenshot: test-artifacts/guided_start.png."""
from __future__ import annotations

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
