"""core.generation.engine on the CPU with the tiny SD1.5 model and a freshly trained tiny LoRA.

LoRA strengths change the image and strength 0 is exactly the base model; a second LoRA is
applied to the same pipeline (no reload); <lora:name:w> tags; A1111 PNG parameters; the grid.
"""
from __future__ import annotations

import os
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from core.generation.engine import Generator
from core.generation.lora_files import (GenerateError, family_warning, list_loras, parse_lora_tags, read_lora_info,
                                        resolve_lora_name)
from train_helpers import tiny_config, train_in_process

SMALL = dict(steps=3, width=64, height=64, sampler="euler_a")
PROMPT = "zqx, a red circle"


@pytest.fixture(scope="module")
def run(tiny_sd15, tiny_dataset, tmp_path_factory):
    """A trained LoRA: lora_dir/zqx_style.safetensors (final) and zqx_style-step00000005.safetensors."""
    out = tmp_path_factory.mktemp("gen_loras")
    train_in_process(tiny_config(tiny_sd15, tiny_dataset, out, output_name="zqx_style", max_train_steps=10,
                                 save_every_n_steps=5, trigger_word="zqx"))
    return {"dir": out, "final": out / "zqx_style.safetensors", "step5": out / "zqx_style-step00000005.safetensors",
            "model": str(tiny_sd15)}


@pytest.fixture(scope="module")
def gen(run, tmp_path_factory):
    return Generator(tmp_path_factory.mktemp("generated"), [str(run["dir"])], model=run["model"])


def pixels(result) -> np.ndarray:
    image, _params = result
    return np.asarray(image.convert("RGB")).astype(np.int16)


def one(gen, prompt=PROMPT, loras=(), seed=1234, **kw):
    (res,) = gen.generate(prompt, "", list(loras), seed=seed, **{**SMALL, **kw})
    return res


def test_strength_changes_the_image_and_zero_is_exactly_the_base(gen, run):
    base = pixels(one(gen))  # before any LoRA is loaded
    on = pixels(one(gen, loras=[(str(run["final"]), 1.0)]))
    half = pixels(one(gen, loras=[(str(run["final"]), 0.5)]))
    zero = pixels(one(gen, loras=[(str(run["final"]), 0.0)]))
    none = pixels(one(gen))
    assert np.abs(on - base).max() > 0, "strength 1 gave the base model's image"
    assert np.abs(half - on).max() > 0 and np.abs(half - base).max() > 0
    assert np.array_equal(zero, base)
    assert np.array_equal(none, base)


def test_a_second_lora_reuses_the_loaded_base_pipeline(gen, run):
    one(gen)
    pipe, unet, te = gen.pipe, gen.pipe.unet, gen.pipe.text_encoder
    a = pixels(one(gen, loras=[(str(run["final"]), 1.0)]))
    b = pixels(one(gen, loras=[(str(run["step5"]), 1.0)]))
    both = pixels(one(gen, loras=[(str(run["final"]), 1.0), (str(run["step5"]), 1.0)]))
    a_again = pixels(one(gen, loras=[(str(run["final"]), 1.0)]))
    assert gen.pipe is pipe and gen.pipe.unet is unet and gen.pipe.text_encoder is te
    assert set(gen.loaded_adapters()) == {str(run["final"].resolve()), str(run["step5"].resolve())}
    assert np.abs(a - b).max() > 0 and np.abs(both - a).max() > 0
    assert np.array_equal(a, a_again)  # switching back leaves nothing of the other LoRA behind


def test_a_rewritten_lora_file_is_loaded_again(gen, run, tmp_path):
    path = tmp_path / "moving.safetensors"
    shutil.copy(run["step5"], path)
    first = pixels(one(gen, loras=[(str(path), 1.0)]))
    shutil.copy(run["final"], path)  # a new training wrote a file with the same name
    later = time.time() + 5
    os.utime(path, (later, later))
    again = pixels(one(gen, loras=[(str(path), 1.0)]))
    assert np.array_equal(again, pixels(one(gen, loras=[(str(run["final"]), 1.0)])))
    assert not np.array_equal(first, again)


def test_lora_tags_are_parsed_resolved_and_applied(gen, run):
    assert parse_lora_tags("zqx, <lora:Foo:0.5>, a red circle") == ("zqx, a red circle", [("Foo", 0.5)])
    assert parse_lora_tags("<lora:foo> a cat <LORA:bar:-0.25>") == ("a cat", [("foo", 1.0), ("bar", -0.25)])
    assert parse_lora_tags("no tags here") == ("no tags here", [])
    with pytest.raises(GenerateError, match="not a number"):
        parse_lora_tags("a cat <lora:foo:lots>")

    folders = [str(run["dir"])]
    assert resolve_lora_name("ZQX_STYLE-step00000005", folders) == str(run["step5"])
    assert resolve_lora_name("zqx_style.safetensors", folders) == str(run["final"])
    with pytest.raises(GenerateError) as err:
        resolve_lora_name("nope", folders)
    assert "nope" in str(err.value) and str(run["dir"]) in str(err.value) and "zqx_style" in str(err.value)
    with pytest.raises(GenerateError, match="nope"):
        one(gen, prompt="zqx <lora:nope:1>")

    tagged = one(gen, prompt="zqx, <lora:zqx_style:0.5>, a red circle")
    explicit = one(gen, loras=[(str(run["final"]), 0.5)])
    assert np.array_equal(pixels(tagged), pixels(explicit))
    assert tagged.parameters.splitlines()[0] == "zqx, a red circle <lora:zqx_style:0.5>"
    # a tag wins over the explicit choice of the same file
    override = one(gen, prompt="zqx, a red circle <lora:zqx_style:0.5>", loras=[(str(run["final"]), 1.0)])
    assert np.array_equal(pixels(override), pixels(explicit))


A1111_LINE = re.compile(r"^Steps: (\d+), Sampler: ([^,]+), CFG scale: ([\d.]+), Seed: (\d+), Size: (\d+)x(\d+), "
                        r"Model: ([^,]+)$")


def test_png_holds_a1111_parameters_and_random_seeds_are_recorded(gen, run):
    results = gen.generate(PROMPT, "blurry", [(str(run["final"]), 0.8)], seed=-1, batch_count=2, guidance=6.5,
                           **SMALL)
    assert len(results) == 2
    seeds = [r.seed for r in results]
    assert seeds[1] == seeds[0] + 1 or (seeds[0] == 2**32 - 1 and seeds[1] == 0)
    for res in results:
        image, params = res
        with Image.open(res.path) as png:
            assert png.text["parameters"] == params
            assert png.size == (64, 64)
        lines = params.splitlines()
        assert lines[0] == "zqx, a red circle <lora:zqx_style:0.8>"
        assert lines[1] == "Negative prompt: blurry"
        m = A1111_LINE.match(lines[2])
        assert m, lines[2]
        assert m.groups() == ("3", "Euler a", "6.5", str(res.seed), "64", "64", m.group(7))
    # the recorded seed reproduces the image
    (again,) = gen.generate(PROMPT, "blurry", [(str(run["final"]), 0.8)], seed=seeds[1], guidance=6.5, **SMALL)
    assert np.array_equal(pixels(again), pixels(results[1]))


def test_compare_grid_has_one_cell_per_file_and_strength(gen, run):
    files = [str(run["step5"]), str(run["final"])]
    strengths = [0, 0.5, 1.0]
    res = gen.compare_grid(PROMPT, "", files, strengths, seed=99, **SMALL)
    grid, cells = res.image, res.cells
    assert len(cells) == 2 and all(len(row) == 3 for row in cells)
    assert all(c.size == (64, 64) for row in cells for c in row)
    label_w, head_h = grid.width - 3 * 64, grid.height - 2 * 64
    assert 0 < label_w <= 12 * 12 and 0 < head_h < 100  # room for the labels, then exactly rows x cols cells
    assert np.array_equal(np.asarray(cells[0][0]), np.asarray(cells[1][0]))  # strength 0 = no LoRA in every row
    base = one(gen, seed=99)
    assert np.array_equal(np.asarray(cells[0][0]), np.asarray(base.image))
    assert not np.array_equal(np.asarray(cells[0][2]), np.asarray(cells[1][2]))
    full = one(gen, seed=99, loras=[(str(run["final"]), 1.0)])
    assert np.array_equal(np.asarray(cells[1][2]), np.asarray(full.image))
    # the cell pixels are in the grid where the labels say
    assert np.array_equal(np.asarray(grid)[head_h + 64:head_h + 128, label_w + 128:label_w + 192],
                          np.asarray(cells[1][2].convert("RGB")))
    with Image.open(res.path) as png:
        assert "Grid: rows = zqx_style-step00000005, zqx_style" in png.text["parameters"]
    with pytest.raises(GenerateError):
        gen.compare_grid(PROMPT, "", [], strengths, seed=1, **SMALL)


def test_list_loras_reads_the_header_and_warns_about_other_families(run, tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "loras"
    (folder / "sub").mkdir(parents=True)
    (folder / "state").mkdir()
    shutil.copy(run["step5"], folder / "sub" / "older.safetensors")
    shutil.copy(run["final"], folder / "state" / "lora.safetensors")  # resumable state: not listed
    save_file({"model.diffusion_model.x.weight": np.zeros((2, 2), np.float32)}, str(folder / "not_a_lora.safetensors"))
    shutil.copy(run["final"], folder / "newest.safetensors")
    older = (folder / "sub" / "older.safetensors").stat().st_mtime
    os.utime(folder / "newest.safetensors", (older + 60, older + 60))  # newer by a minute, whatever the clock

    infos = list_loras([folder, folder / "missing"])
    assert [i.name for i in infos] == ["newest", "older"]
    top = infos[0]
    assert (top.output_name, top.family, top.trigger, top.base_version) == ("zqx_style", "sd15", "zqx", "sd_v1")
    assert top.epoch == 1 and top.steps == 10 and infos[1].steps == 5
    assert not top.warning and "newest" in top.label and "epoch 1" in top.label
    warned = list_loras([folder], base_family="sdxl")
    assert all("SD1.5" in i.warning and "SDXL" in i.warning for i in warned)
    assert family_warning(read_lora_info(run["final"]), "sd15") == ""
    assert read_lora_info(folder / "not_a_lora.safetensors") is None


def test_half_precision_keeps_the_sdxl_vae_in_float32(tiny_sdxl, tmp_path):
    """The GPU setting (fp16, SDXL VAE fp32), run on the CPU: the VAE gets fp32 latents, the image is sane."""
    import torch

    gen = Generator(tmp_path, [], model=str(tiny_sdxl), device=torch.device("cpu"), dtype=torch.float16)
    (res,) = gen.generate(PROMPT, "", [], seed=5, clip_skip=2, **SMALL)
    assert gen.family.name == "sdxl"
    assert gen.pipe.unet.dtype == torch.float16 and gen.pipe.vae.dtype == torch.float32
    px = pixels(res)
    assert px.std() > 1  # not a flat (black / NaN) image
    assert "Clip skip" not in res.parameters  # SDXL always uses the penultimate layer: not recorded
    gen.unload()
    assert gen.pipe is None and gen.loaded_adapters() == {}


def test_a_dora_file_is_flagged_in_the_lora_notes(tmp_path):
    import torch
    from safetensors.torch import save_file

    from ui.generate_choices import lora_notes

    t = {"lora_unet_x.lora_down.weight": torch.zeros(2, 4), "lora_unet_x.lora_up.weight": torch.zeros(4, 2),
         "lora_unet_x.dora_scale": torch.ones(4, 1)}
    save_file(t, str(tmp_path / "d.safetensors"), metadata={"ss_base_model_version": "sd_v1"})
    save_file({k: v for k, v in t.items() if "dora" not in k}, str(tmp_path / "p.safetensors"))
    assert "DoRA file" in lora_notes([str(tmp_path / "d.safetensors")], "sd15")
    assert "DoRA" not in lora_notes([str(tmp_path / "p.safetensors")], "sd15")
