"""The built-in toy base model, the shape checker, the demo dataset and `python -m core demo`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.toy import checker, shapes
from core.toy.demo_data import demo_prompts, write_demo_dataset
from train_helpers import REPO, CaptureLogs

TOY = REPO / "models" / "toy-sd15"
BUILD_HINT = "the toy model is missing: build it with `python -m core.toy.build --out models/toy-sd15`"


@pytest.fixture(scope="module")
def toy_model() -> Path:
    if not (TOY / "model_index.json").is_file():
        pytest.fail(BUILD_HINT)
    return TOY


# ----------------------------------------------------------------------------- drawing and checking

def test_shapes_are_deterministic_and_captioned():
    a, specs_a = shapes.batch(np.random.default_rng(3), 6, shapes.ALL_SHAPES)
    b, specs_b = shapes.batch(np.random.default_rng(3), 6, shapes.ALL_SHAPES)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and specs_a == specs_b
    spec = shapes.ShapeSpec("circle", "red", "white", 16, 16, 10)
    assert spec.caption() == "a red circle on a white background"
    assert spec.caption("zqx") == "a red zqx on a white background"
    assert "star" not in " ".join(shapes.all_captions())


@pytest.mark.parametrize("blur", [0.0, 1.0])
def test_checker_reads_drawn_shapes(blur):
    res = checker.self_check(120, seed=11, blur=blur)
    assert res["shape"] >= 0.95, res
    assert res["color"] >= 0.95, res


def test_checker_on_plain_and_noisy_images():
    assert checker.classify(np.full((32, 32, 3), 200, np.uint8)).shape == "none"
    img = np.asarray(shapes.draw(shapes.ShapeSpec("star", "blue", "gray", 15, 17, 11))).astype(np.float32)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    v = checker.classify(noisy)
    assert (v.shape, v.color) == ("star", "blue"), v.as_dict()


def test_demo_dataset_layout(tmp_path):
    root = write_demo_dataset(tmp_path)
    folder = root / "10_zqx"
    pngs, txts = sorted(folder.glob("*.png")), sorted(folder.glob("*.txt"))
    assert 12 <= len(pngs) <= 20 and len(txts) == len(pngs)
    captions = [t.read_text(encoding="utf-8").strip() for t in txts]
    assert all(c.startswith("a ") and " zqx on a " in c and "star" not in c for c in captions)
    assert len({c.split()[1] for c in captions}) == len(shapes.COLORS)  # every colour appears
    assert all(checker.classify(p).shape == "star" for p in pngs)
    again = write_demo_dataset(tmp_path / "again")
    assert (again / "10_zqx" / pngs[0].name).read_bytes() == pngs[0].read_bytes()
    assert demo_prompts(3)[0][0] == "a red zqx on a white background"


# ----------------------------------------------------------------------------- the build script (tiny run)

def _tiny_plan(**kw):
    from core.toy.build import Plan

    return Plan(vae_steps=3, vae_batch=4, unet_steps=3, unet_batch=4, warmup=1, eval_seeds=0, **kw)


def test_build_pauses_resumes_and_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from core.toy.build import Paused, build

    quiet = lambda m: None  # noqa: E731
    build(tmp_path / "straight", _tiny_plan(), echo=quiet)
    out = tmp_path / "paused"
    with pytest.raises(Paused):
        build(out, _tiny_plan(), echo=quiet, max_minutes=1e-9)  # stops after the first VAE step
    assert (tmp_path / "paused.work" / "vae.pt").is_file() and not out.exists()
    info = build(out, _tiny_plan(), echo=quiet)
    assert not (tmp_path / "paused.work").exists()
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):
        a, b = load_file(tmp_path / "straight" / part), load_file(out / part)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part
        assert all(v.dtype == torch.float16 for v in a.values() if v.is_floating_point())
    assert info["vae"]["psnr_db"] > 0
    assert (out / "tokenizer" / "vocab.json").read_bytes() == (
        REPO / "core" / "models" / "configs" / "clip_tokenizer" / "vocab.json").read_bytes()


# ----------------------------------------------------------------------------- the shipped toy model

def test_toy_model_loads_through_the_normal_loader(toy_model):
    from core.models.loading import load_components

    comps = load_components(str(toy_model))
    assert comps.family.name == "sd15"
    assert type(comps.denoiser).__name__ == "UNet2DConditionModel"
    assert type(comps.vae).__name__ == "AutoencoderKL"
    assert type(comps.text_encoders[0]).__name__ == "CLIPTextModel"
    assert type(comps.tokenizers[0]).__name__.startswith("CLIPTokenizer")
    for m in (comps.denoiser, comps.vae, comps.text_encoders[0]):
        assert {p.dtype for p in m.parameters()} == {torch.float32}  # stored in fp16, loaded in fp32
    assert comps.pipeline.vae_scale_factor == 4 and comps.denoiser.config.sample_size == 8
    ids = comps.tokenizers[0]("a red zqx on a white background").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) > 8  # real CLIP BPE
    from core.models.detect import native_image_size

    assert native_image_size(toy_model) == 32  # what the Generate tab and the Demo preset use
    size = sum(p.stat().st_size for p in toy_model.rglob("*") if p.is_file())
    assert size <= 30e6, f"the toy model folder is {size / 1e6:.1f} MB"


def test_toy_model_recorded_quality(toy_model):
    info = json.loads((toy_model / "toy_model.json").read_text(encoding="utf-8"))
    follow = info["prompt_following"]
    assert follow["color_right"] >= 0.8 and follow["shape_right"] >= 0.6, follow
    assert follow["star_rate_for_trigger_word"] < 0.2, follow
    assert info["vae"]["star_right"] >= 0.8 and info["vae"]["color_right"] >= 0.9, info["vae"]


def test_toy_model_follows_prompts(toy_model):
    from core.toy.measure import generate, load_toy

    pipe = load_toy(toy_model)
    wanted = [(c, s) for s in shapes.BASE_SHAPES for c in shapes.COLORS]
    prompts = [shapes.caption(c, s, "white" if i % 2 else "black") for i, (c, s) in enumerate(wanted)]
    images = generate(pipe, prompts, [500 + i for i in range(len(prompts))])
    res = checker.prompt_following(images, wanted)
    assert res["color"] >= 0.6 and res["shape"] >= 0.4, res


# ----------------------------------------------------------------------------- the demo command

@pytest.fixture(scope="module")
def demo_run(toy_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "core", "demo", "--out", str(out), "--steps", "200", "--images", "15"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, result


def test_demo_teaches_the_concept(demo_run):
    out, r = demo_run
    for key in ("concept_score_base", "concept_score_lora", "lora_path", "seconds"):
        assert key in r
    assert r["steps"] == 200
    assert r["concept_score_base"] < 0.2, r
    assert r["concept_score_lora"] >= r["concept_score_base"] + 0.3, r
    assert r["lora_load_problems"] == []
    assert (out / "dataset" / "10_zqx").is_dir() and Path(r["compare_image"]).is_file()
    events = [json.loads(line) for line in (out / "demo_zqx" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "completed"


def test_demo_lora_loads_in_diffusers_without_unexpected_keys(demo_run, toy_model):
    from diffusers import StableDiffusionPipeline

    out, r = demo_run
    pipe = StableDiffusionPipeline.from_pretrained(str(toy_model), safety_checker=None, local_files_only=True)
    with CaptureLogs() as logs:
        pipe.load_lora_weights(r["lora_path"], adapter_name="demo")
    assert logs.key_problems() == []
    assert "demo" in pipe.get_list_adapters().get("unet", [])
