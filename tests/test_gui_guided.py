"""The Training tab's guided start in Debian chromium: it fills the form for a subject, family, dataset and a VRAM
chosen by hand (the test machine has no GPU), and the live VRAM estimate and the guardrail warnings follow the
form. Uses the app of test_gui_training (fake trainer). Screenshot: test-artifacts/guided_start.png."""
from __future__ import annotations

import re

from test_gui_training import REPO, app, field, fill, page, shot  # noqa: F401 (pytest fixtures)
from gui_server import choose, playwright_api, settle

if playwright_api is not None:
    expect = playwright_api.expect



def test_guided_start_fills_the_form_and_shows_estimate_and_warnings(page, app):
    box = page.locator("#guided-start")
    expect(box).to_contain_text("Guided start")
    estimate = page.locator("#estimate-box")
    warnings = page.locator("#guardrails-box")
    choose(page, "guided-subject", "art style", exact=True)
    choose(page, "guided-family", "SDXL", exact=True)
    choose(page, "guided-vram", "12 GB", exact=True)
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
    choose(page, "guided-vram", "8 GB", exact=True)
    expect(estimate).to_contain_text("Fits in 8 GB")  # the UNet waits in RAM while latents are cached
    fill(page, "train_batch_size", 2)
    expect(estimate).to_contain_text("Does not fit in 8 GB")
    expect(estimate).to_contain_text("Cheapest changes")
    expect(estimate).to_contain_text("(fits)")
    page.locator("#guided-result details summary").click()
    expect(result).to_contain_text("learning_rate = 1e-4")
    shot(page, "guided_start.png")


def test_preset_and_guided_start_leave_nothing_of_an_earlier_preset(page, app):
    """The Demo preset sets conv_dim, lora_ff and 32 px sample prompts; the next preset and the guided start reset
    what they do not choose to the defaults, and keep what the user typed (trigger word, output name, folder)."""
    choose(page, "preset", "Demo (CPU)", exact=True)
    page.locator("#adv-network").get_by_text("LoRA network").click()
    expect(field(page, "conv_dim")).to_have_value("8")
    expect(field(page, "lora_ff")).to_be_checked()
    expect(field(page, "sample_prompts")).to_have_value(re.compile("--w 32"))
    fill(page, "trigger_word", "zqx")
    fill(page, "output_name", "mine")
    choose(page, "preset", "SD1.5 character", exact=True)
    expect(field(page, "conv_dim")).to_have_value("0")
    expect(field(page, "lora_ff")).not_to_be_checked()
    expect(field(page, "resolution")).to_have_value("512")
    expect(field(page, "sample_prompts")).to_have_value("")  # the Demo's prompts, unchanged: reset too
    choose(page, "preset", "Demo (CPU)", exact=True)
    expect(field(page, "conv_dim")).to_have_value("8")
    fill(page, "sample_every_n_epochs", 3)
    choose(page, "guided-family", "SDXL", exact=True)
    choose(page, "guided-vram", "12 GB", exact=True)
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
    expect(page.locator("#preset-family").get_by_label("SDXL", exact=True)).to_be_checked()  # like what was filled
    expect(page.locator("#preset-vram input")).to_have_value("12 GB")


def listed(page) -> list[str]:
    """The Preset list's options (opened and closed again)."""
    page.locator("#preset input").click()
    page.get_by_role("option").first.wait_for()
    names = [t.split("\n")[-1].strip() for t in page.get_by_role("option").all_inner_texts()]  # no ✓ line
    page.keyboard.press("Escape")
    page.locator("#preset input").blur()  # a focused list opens again only on the next focus
    return [n for n in names if not n.endswith("(mine)")]  # a user preset of the checkout is listed everywhere


def test_preset_list_is_narrowed_by_family_and_gpu_memory(page, app):
    everything = listed(page)
    assert len(everything) == 71 and "Demo (CPU)" in everything and "Flux.1 dev · style · 16 GB" in everything
    assert "FLUX.2 klein base 4B · character · 8 GB" in everything
    page.locator("#preset-family").get_by_label("SDXL", exact=True).check()
    expect(page.locator("#preset-family").get_by_label("SDXL", exact=True)).to_be_checked()
    settle(page)
    sdxl = listed(page)
    assert len(sdxl) == 18 and all(n.startswith("SDXL") for n in sdxl), sdxl  # 2 hand-made + 4 subjects x 4 sizes
    choose(page, "preset-vram", "12 GB", exact=True)
    settle(page)
    expect(page.get_by_role("option")).to_have_count(0)
    assert listed(page) == ["SDXL character", "SDXL style", "SDXL · character · 12 GB", "SDXL · style · 12 GB",
                            "SDXL · concept · 12 GB", "SDXL · clothing · 12 GB"]
    page.locator("#preset input").click()
    shot(page, "preset_picker.png")
    page.get_by_role("option", name="SDXL · style · 12 GB", exact=True).click()
    expect(field(page, "network_dim")).to_have_value("64")
    expect(page.locator("#preset-desc")).to_contain_text("for a 12 GB GPU")
    # an SD1.5 base model: the family filter follows it; the chosen SDXL preset stays (and is warned about)
    fill(page, "pretrained_model_name_or_path", REPO / "models" / "toy-sd15", enter=True)
    expect(page.locator("#preset-family").get_by_label("SD1.5", exact=True)).to_be_checked()
    expect(page.locator("#preset input")).to_have_value("SDXL · style · 12 GB")
    expect(page.locator("#guardrails-box")).to_contain_text("The preset is made for SDXL, but the base model is SD1.5")
    settle(page)
    sd15 = listed(page)
    assert sd15[:3] == ["SD1.5 character", "SD1.5 style", "Demo (CPU)"]  # hand-made for 8 GB fit 12; the demo: any
    assert [n for n in sd15 if "·" in n] == [f"SD1.5 · {s} · 12 GB" for s in ("character", "style", "concept",
                                                                               "clothing")] + ["SDXL · style · 12 GB"]
    choose(page, "preset", "Demo (CPU)", exact=True)
    expect(field(page, "resolution")).to_have_value("32")
    expect(page.locator("#guardrails-box")).not_to_contain_text("The preset is made for")
