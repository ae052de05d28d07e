"""The Generate tab's behaviour without a browser (ui/generate_actions.py, ui/generate_choices.py): the model and
LoRA lists, what the family of the base model changes, the requests handed to the engine, the messages for bad
inputs and what a finished generation / grid shows. Tiny header-only files in tmp_path; no image is generated."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from ui import generate_actions as act
from ui.generate_choices import SIZES_SEEN, model_choices, model_label

Z = np.zeros((2, 2), np.float32)


def lora(path: Path, *, name: str = "", epoch: int | None = None, trigger: str = "", version: str = "sd_v1",
         lycoris: bool = False, mtime: float | None = None) -> str:
    """A tiny LoRA file (header metadata as the trainer writes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b") if lycoris else ("lora_down.weight", "lora_up.weight")
    meta = {"ss_base_model_version": version, "ss_output_name": name or path.stem}
    if epoch is not None:
        meta["ss_epoch"] = str(epoch)
    if trigger:
        meta["modelspec.trigger_phrase"] = trigger
    save_file({f"lora_unet_down_blocks_0_attentions_0_proj_in.{k}": Z for k in keys}, str(path), metadata=meta)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return str(path)


def diffusers_folder(path: Path, pipeline: str, **configs: dict) -> str:
    """A diffusers model folder with only its configs (model_index.json, <part>/config.json)."""
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    for part, cfg in configs.items():
        (path / part).mkdir()
        (path / part / "config.json").write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture
def sd15(tmp_path) -> str:
    return diffusers_folder(tmp_path / "models" / "my-sd15", "StableDiffusionPipeline",
                            unet={"sample_size": 64, "cross_attention_dim": 768},
                            vae={"block_out_channels": [8, 8, 8, 8]})


@pytest.fixture
def flux_dev(tmp_path) -> str:
    return diffusers_folder(tmp_path / "models" / "my-flux-dev", "FluxPipeline", transformer={"guidance_embeds": True})


@pytest.fixture
def flux_schnell(tmp_path) -> str:
    return diffusers_folder(tmp_path / "models" / "my-schnell", "FluxPipeline",
                            transformer={"guidance_embeds": False})


# --------------------------------------------------------------------------- the model list
def test_the_model_list_shows_folders_and_checkpoints_one_level_deep(tmp_path, sd15):
    models = tmp_path / "models"
    (models / "a.safetensors").write_bytes(b"x")
    (models / "b.ckpt").write_bytes(b"x")
    (models / "notes.txt").write_text("not a model")
    (models / ".hidden.safetensors").write_bytes(b"x")
    (models / "sdxl").mkdir()
    (models / "sdxl" / "c.safetensors").write_bytes(b"x")
    found = model_choices(str(models))
    assert [Path(p).name for p in found] == ["a.safetensors", "b.ckpt", "my-sd15", "c.safetensors"]
    assert [model_label(p) for p in found] == ["a.safetensors", "b.ckpt", "my-sd15 (diffusers folder)",
                                               "c.safetensors"]
    assert model_label("org/some-repo") == "org/some-repo"  # a Hugging Face id is shown as typed
    assert model_choices(str(tmp_path / "missing")) == [] and model_choices("") == []


# --------------------------------------------------------------------------- LoRA pickers
def test_lora_lists_keep_listed_choices_and_show_trigger_words(tmp_path, sd15):
    out, loras = tmp_path / "out", tmp_path / "loras"
    a = lora(out / "zqx_style.safetensors", name="zqx_style", epoch=2, trigger="zqx", mtime=2_000_000)
    b = lora(loras / "other.safetensors", mtime=1_000_000)
    typed = lora(tmp_path / "elsewhere" / "typed.safetensors")
    settings = {"output_dir": str(out), "loras_dir": str(loras)}
    got = act.lora_lists(settings, None, sd15, [a, str(tmp_path / "gone.safetensors"), typed, None],
                         [b, str(tmp_path / "gone.safetensors")])
    assert [path for _label, path in got.choices] == [a, b]  # newest first
    assert got.choices[0][0].startswith("zqx_style — epoch 2")
    assert got.picks == [a, None, typed, None]  # a file no longer there is cleared; a typed-in file stays
    assert got.grid == [b]
    assert "trigger word: `zqx`" in got.notes and "gone.safetensors` not found" in got.notes
    assert got.rows == [True, True, True, True]


def test_lora_rows_show_the_chosen_ones_and_one_empty_row_after():
    assert act.row_visibility([None, None, None, None]) == [True, False, False, False]
    assert act.row_visibility(["a", None, None, None]) == [True, True, False, False]
    assert act.row_visibility(["a", None, "c", None]) == [True, True, True, True]


def test_a_lora_for_another_family_is_flagged_under_the_pickers(tmp_path, sd15):
    sdxl = lora(tmp_path / "xl.safetensors", version="sdxl_base_v1-0")
    notes = act.pick_notes(sd15, [sdxl, None, None, None])
    assert "xl was trained for SDXL but the base model is SD1.5: it cannot be used with it" in notes
    assert act.pick_notes(sd15, [None] * 4) == ""


def test_all_epochs_of_the_newest_training_in_epoch_order(tmp_path):
    out = tmp_path / "out"
    old = lora(out / "old_run" / "old.safetensors", name="old", epoch=1, mtime=1_000_000)
    e2 = lora(out / "run" / "cat-000002.safetensors", name="cat", epoch=2, mtime=2_000_100)
    e1 = lora(out / "run" / "cat-000001.safetensors", name="cat", epoch=1, mtime=2_000_000)
    final = lora(out / "run" / "cat.safetensors", name="cat", epoch=3, mtime=2_000_200)
    settings = {"output_dir": str(out)}
    assert act.newest_epochs(settings, None, "") == [e1, e2, final]
    assert old not in act.newest_epochs(settings, None, "")
    with pytest.raises(act.InputError, match="No LoRA files found in your outputs / LoRA folders"):
        act.newest_epochs({"output_dir": str(tmp_path / "empty")}, None, "")


# --------------------------------------------------------------------------- the base model's family
def test_width_and_height_follow_the_model_unless_the_user_chose_a_size(sd15, flux_dev):
    assert 512 in SIZES_SEEN and 1024 in SIZES_SEEN
    assert act.follow_size(flux_dev, 512, 512) == (1024, 1024)
    assert act.follow_size(flux_dev, 640, 512) == (None, 1024)  # 640 was the user's choice: kept
    assert act.follow_size(sd15, 1024, 1024) == (512, 512)  # read from the unet / vae configs
    assert act.follow_size("", 640, 640) == (None, None)  # no model: nothing changes


def test_family_controls_for_sd_flux_dev_and_schnell(sd15, flux_dev, flux_schnell):
    sd = act.family_controls(sd15, 7.0)
    assert (sd.negative_prompt, sd.samplers, sd.clip_skip, sd.guidance) == (True, True, True, True)
    assert sd.guidance_label == "Guidance (CFG)" and sd.guidance_value is None and sd.steps is None
    dev = act.family_controls(flux_dev, 7.0)  # 7 is SD's usual value: becomes Flux dev's 3.5
    assert (dev.negative_prompt, dev.samplers, dev.clip_skip, dev.guidance) == (False, False, False, True)
    assert dev.guidance_label.startswith("Distilled guidance") and dev.guidance_value == 3.5
    assert act.family_controls(flux_dev, 5.5).guidance_value is None  # the user's own value stays
    schnell = act.family_controls(flux_schnell, 3.5)
    assert schnell.guidance is False and schnell.steps == 4 and schnell.negative_prompt is False
    back = act.family_controls(sd15, 3.5)  # back from Flux dev: CFG 7 again
    assert back.guidance_value == 7.0


# --------------------------------------------------------------------------- requests to the engine
def test_strengths_are_parsed_and_bad_ones_named():
    assert act.parse_strengths("0, 0.5 ;0.8,, 1") == [0.0, 0.5, 0.8, 1.0]
    assert act.parse_strengths("-1") == [-1.0]
    with pytest.raises(act.InputError) as err:
        act.parse_strengths("0, half, 1")
    assert str(err.value) == "Strengths: 'half' is not a number. Write them like 0, 0.5, 0.8, 1.0"
    with pytest.raises(act.InputError, match="give at least one, like 0, 0.5, 0.8, 1.0"):
        act.parse_strengths(" , ")


def test_the_lora_rows_become_the_engines_loras():
    req = act.generate_request("m", None, ["/l/a.safetensors", None, "/l/c.safetensors", ""], [0.8, 1.0, 0, 1.0],
                               "zqx, a cat", None, "euler_a", 20.0, 7.5, 512.0, 768.0, None, 2.0, 2.0)
    assert req == dict(prompt="zqx, a cat", negative="", loras=[("/l/a.safetensors", 0.8), ("/l/c.safetensors", 0.0)],
                       seed=-1, steps=20, guidance=7.5, width=512, height=768, sampler="euler_a", batch_count=2,
                       clip_skip=2, model="m", vae="")
    assert all(type(req[k]) is int for k in ("steps", "width", "height", "batch_count", "clip_skip", "seed"))
    calls = []
    assert act.run(lambda **kw: calls.append(kw) or ["done"], req, progress=None) == ["done"]
    assert calls == [{**req, "progress": None}]
    with pytest.raises(act.InputError, match="Write a prompt first."):
        act.generate_request("m", "", [None] * 4, [1.0] * 4, "   ", "", "euler_a", 20, 7, 512, 512, 1, 1, 1)


def test_the_grid_inputs_become_the_engines_axes_and_their_mistakes_are_named():
    req = act.grid_request("m", "v.safetensors", ["/l/e1.safetensors", "/l/e2.safetensors"], "0, 1", "zqx", "ugly",
                           "ddim", 4, 3.5, 64, 64, 99, 1)
    assert req["lora_files"] == ["/l/e1.safetensors", "/l/e2.safetensors"] and req["strengths"] == [0.0, 1.0]
    assert (req["seed"], req["negative"], req["vae"], req["sampler"]) == (99, "ugly", "v.safetensors", "ddim")
    args = ("zqx", "", "euler_a", 4, 7, 64, 64, -1, 1)
    with pytest.raises(act.InputError, match="'x' is not a number"):  # the strengths are checked first
        act.grid_request("m", "", [], "x", *args)
    with pytest.raises(act.InputError, match="Choose at least one LoRA file for the rows"):
        act.grid_request("m", "", [], "0, 1", *args)
    with pytest.raises(act.InputError, match=r"Write a prompt first \(above\)"):
        act.grid_request("m", "", ["/l/e1.safetensors"], "0, 1", "", *args[1:])


def test_failures_become_messages_the_user_can_act_on(capsys):
    from core.generation.lora_files import GenerateError

    def fail(exc):
        def call(**_kw):
            raise exc
        return call

    with pytest.raises(act.InputError) as err:
        act.run(fail(GenerateError("<lora:nope>: no LoRA file named 'nope.safetensors' in /out.")), {})
    assert str(err.value) == "<lora:nope>: no LoRA file named 'nope.safetensors' in /out."
    with pytest.raises(act.InputError, match="The GPU ran out of memory: lower the width/height or the batch count"):
        act.run(fail(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore")), {})
    with pytest.raises(act.InputError) as err:
        act.run(fail(KeyError("unet")), {})
    assert str(err.value) == "KeyError: 'unet'"
    assert "Traceback" in capsys.readouterr().err  # an unexpected failure leaves its traceback in the console


def test_the_toast_escapes_the_message_so_lora_tags_show():
    from ui.generate_tab import _error

    e = _error("<lora:nope>: no LoRA file named 'nope.safetensors'")
    assert e.message.startswith("&lt;lora:nope&gt;: no LoRA file named &#x27;nope.safetensors&#x27;")


# --------------------------------------------------------------------------- the engine's own checks
def loaded_generator(tmp_path, family: str = "sd15"):
    """A real Generator that believes a base model is loaded (nothing is: the LoRA checks come first)."""
    from core import families
    from core.generation.engine import Generator

    gen = Generator(tmp_path / "generated", [str(tmp_path)])
    gen.pipe = object()
    gen.family = SimpleNamespace(name=family, size_multiple=8, title=families.title(family))
    return gen


def test_a_missing_or_lycoris_lora_file_is_refused_by_name(tmp_path):
    gen = loaded_generator(tmp_path)
    base = act.generate_request("", "", [str(tmp_path / "gone.safetensors")], [1.0], "zqx", "", "euler_a", 4, 7,
                                64, 64, 1, 1, 1)
    with pytest.raises(act.InputError, match=f"LoRA file not found: {tmp_path / 'gone.safetensors'}"):
        act.run(gen.generate, base)
    loha = lora(tmp_path / "my_loha.safetensors", lycoris=True)
    with pytest.raises(act.InputError) as err:
        act.run(gen.generate, {**base, "loras": [(loha, 1.0)]})
    assert str(err.value).startswith("my_loha.safetensors is a LyCORIS LoHa file: diffusers, which the Generate tab")
    assert "ComfyUI" in str(err.value)
    grid = act.grid_request("", "", [str(tmp_path / "epoch9.safetensors")], "0, 1", "zqx", "", "euler_a", 4, 7,
                            64, 64, 1, 1)
    with pytest.raises(act.InputError, match="LoRA file not found: .*epoch9.safetensors. Refresh the list"):
        act.run(gen.compare_grid, grid)


def test_no_base_model_is_a_message(tmp_path):
    from core.generation.engine import Generator

    req = act.generate_request("", "", [], [], "zqx", "", "euler_a", 4, 7, 64, 64, 1, 1, 1)
    with pytest.raises(act.InputError, match="No base model chosen: pick one in the list or type a path"):
        act.run(Generator(tmp_path / "generated").generate, req)


# --------------------------------------------------------------------------- what a result shows
def result(path, seed, params):
    from core.generation.engine import Result

    return Result(None, params, path, seed)


def test_a_finished_generation_fills_the_gallery_status_and_parameters(tmp_path):
    day = tmp_path / "generated" / "2026-01-01"
    rs = [result(str(day / "00001-7.png"), 7, "zqx, a cat <lora:zqx_style:0.8> <lora:b:1>\nSteps: 4"),
          result(str(day / "00002-8.png"), 8, "zqx, a cat\nSteps: 4")]
    shown = act.generated(rs, ["zqx_style.safetensors: <unexpected keys>"], tmp_path / "generated")
    assert shown.items == [(rs[0].path, "seed 7 · zqx_style 0.8 · b 1"), (rs[1].path, "seed 8")]
    assert shown.status.startswith(f"Done: 2 images, seed 7, 8. Saved as 00001-7.png … 00002-8.png in `{day}`.")
    assert shown.status.endswith("\n\n⚠ zqx_style.safetensors: &lt;unexpected keys&gt;")
    assert shown.first_params == rs[0].parameters and shown.params == [rs[0].parameters, rs[1].parameters]
    assert shown.seed == 7
    one = act.generated(rs[1:], [], tmp_path / "generated")
    assert one.status == f"Done: 1 image, seed 8. Saved as 00002-8.png in `{day}`."
    unsaved = act.generated([result(None, 3, "p")], [], tmp_path / "generated")
    assert unsaved.status == f"Done: 1 image, seed 3. Saved as  in `{tmp_path / 'generated'}`."
    assert act.selected_params(shown.params, 1) == rs[1].parameters
    assert act.selected_params(shown.params, [0, 1]) == rs[0].parameters
    assert act.selected_params(shown.params, 5) is None and act.selected_params([], 0) is None


def test_a_finished_grid_names_its_size_file_and_seed():
    from core.generation.engine import GridResult

    req = act.grid_request("m", "", ["/l/e1.safetensors", "/l/e2.safetensors", "/l/e3.safetensors"], "0, 0.5",
                           "zqx", "", "euler_a", 4, 7, 64, 64, 5, 1)
    res = GridResult(None, [], "/g/00003-grid-5.png", "zqx\nSteps: 4, Sampler: Euler a, Seed: 5\nGrid: rows = e1")
    assert act.grid_done(res, req) == ("/g/00003-grid-5.png", "3 × 2 grid saved as `/g/00003-grid-5.png`. "
                                                              "Steps: 4, Sampler: Euler a, Seed: 5")


def test_unload_tells_what_was_freed(monkeypatch):
    unloaded = []
    fake = SimpleNamespace(pipe=object(), model="/models/my-sd15", unload=lambda: unloaded.append(True))
    monkeypatch.setattr(act, "_GENERATOR", fake)
    assert act.unload_text(act.unload_model()) == ("Unloaded my-sd15: its memory is free. "
                                                   "The next generation loads it again.")
    assert unloaded == [True]
    fake.pipe = None
    assert act.unload_text(act.unload_model()) == "No model is loaded."


def test_saved_images_are_allowed_once_unless_the_app_context_serves_them(tmp_path):
    blocks = SimpleNamespace(allowed_paths=[str(tmp_path / "out")])
    act.allow_path(blocks, None, tmp_path / "out" / "generated")  # already inside an allowed folder
    act.allow_path(blocks, None, tmp_path / "elsewhere")
    act.allow_path(blocks, None, tmp_path / "elsewhere")
    assert blocks.allowed_paths == [str(tmp_path / "out"), str((tmp_path / "elsewhere").resolve())]
    served = []
    act.allow_path(blocks, SimpleNamespace(allow=served.append), tmp_path / "third")
    assert served == [tmp_path / "third"] and len(blocks.allowed_paths) == 2


def test_progress_is_kept_between_0_and_1():
    seen = []
    report = act.progress_to(lambda f, desc: seen.append((f, desc)))
    report(-0.5, "loading")
    report(0.5, "step 2/4")
    report(1.7, "done")
    assert seen == [(0.0, "loading"), (0.5, "step 2/4"), (1.0, "done")]
