"""masked_loss (sd-scripts' convention): masks from a folder or the alpha channel, through bucketing, caching and resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from core.config.toml_io import ConfigError, validate
from core.data.buckets import BucketChooser
from core.data.dataset import DatasetError, load_image, load_items
from core.data.masks import attach_masks, latent_mask, load_mask
from core.train.trainer import Trainer
from test_resume import _events, sigkill_then_resume
from tiny_models import make_tiny_dataset
from train_helpers import tiny_config, train_in_process

FOLDER = "10_zqx"


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons of two in-process runs: one CPU thread (two threads sum in varying order)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pattern(w: int, h: int, seed: int) -> np.ndarray:
    """A left-right and top-bottom asymmetric grey pattern of 4x4-pixel blocks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1), dtype=np.uint8)
    return np.kron(blocks, np.ones((4, 4), dtype=np.uint8))[:h, :w]


def _data(root: Path, sizes=((64, 64),), n: int = 4) -> Path:
    return make_tiny_dataset(root, n=n, name=FOLDER, sizes=list(sizes))


def _write_masks(data: Path, masks: Path, make) -> list[Path]:
    """One mask per image of data/10_zqx as masks/10_zqx/<stem>.png, make(width, height, index) -> uint8 array."""
    (masks / FOLDER).mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in enumerate(sorted((data / FOLDER).glob("*.png"))):
        w, h = Image.open(img).size
        p = masks / FOLDER / img.name
        Image.fromarray(make(w, h, i), "L").save(p)
        out.append(p)
    return out


def _left_black(w: int, h: int, i: int) -> np.ndarray:
    m = np.full((h, w), 255, np.uint8)
    m[:, : w // 2] = 0
    return m


def _items(data: Path, *, bucket: bool = True, reso: int = 64):
    chooser = BucketChooser((reso, reso), enable=bucket, min_reso=32, max_reso=128, step=32)
    return load_items(data, is_reg=False, trigger="", caption_ext=".txt", chooser=chooser)


# --------------------------------------------------------------------------- the mask follows its image
@pytest.mark.parametrize("bucket", [False, True])
def test_mask_follows_resize_crop_and_flip_of_its_image(tmp_path, bucket):
    data = tmp_path / "data"
    (data / FOLDER).mkdir(parents=True)
    pat = _pattern(100, 60, 1)  # not a bucket size: resized, then cropped
    Image.fromarray(pat, "L").convert("RGB").save(data / FOLDER / "a.png")
    masks = tmp_path / "masks"
    (masks / FOLDER).mkdir(parents=True)
    Image.fromarray(pat, "L").save(masks / FOLDER / "a.png")
    items = _items(data, bucket=bucket)
    assert attach_masks(items, "folder", str(masks)) == []
    it = items[0]
    assert it.placement.crop_left_top != (0, 0) and it.placement.resized != it.size
    for flip in (False, True):
        img = (load_image(it, flip)[0] + 1) / 2  # the picture is the mask itself: the same pipeline, the same pixels
        m = load_mask(it, flip)
        assert m.shape == img.shape == (it.placement.bucket[1], it.placement.bucket[0])
        assert (m - img).abs().max() < 1e-5
    assert not torch.equal(load_mask(it, False), load_mask(it, True))
    hw = (it.placement.bucket[1] // 8, it.placement.bucket[0] // 8)
    assert torch.allclose(latent_mask(it, True, hw), latent_mask(it, False, hw).flip(-1), atol=1e-6)  # sum order
    # area averaging, as sd-scripts' apply_masked_loss
    expect = torch.nn.functional.interpolate(load_mask(it)[None, None], size=hw, mode="area")[0]
    assert torch.equal(latent_mask(it, False, hw), expect)


def test_alpha_mask_is_the_alpha_channel_and_the_picture_is_unchanged(tmp_path):
    data = _data(tmp_path / "data", n=1)
    img = data / FOLDER / "img_000.png"
    rgb = Image.open(img).convert("RGB")
    alpha = _pattern(64, 64, 2)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(alpha, "L"))
    items = _items(data)
    before = load_image(items[0])
    rgba.save(img)
    items = _items(data)
    assert attach_masks(items, "alpha") == []
    assert items[0].mask.kind == "alpha"
    assert torch.equal(load_mask(items[0]), torch.from_numpy(alpha.astype(np.float32) / 255.0))
    opaque = rgb.copy()
    opaque.putalpha(255)
    opaque.save(img)
    assert torch.equal(load_image(_items(data)[0]), before), "an opaque alpha channel leaves the picture as it was"


# --------------------------------------------------------------------------- bad input, clear messages
def test_missing_mask_names_the_image_and_where_it_was_looked_for(tmp_path):
    data = _data(tmp_path / "data")
    paths = _write_masks(data, tmp_path / "masks", _left_black)
    paths[2].unlink()
    with pytest.raises(DatasetError) as e:
        attach_masks(_items(data), "folder", str(tmp_path / "masks"))
    msg = str(e.value)
    assert "no mask for 1 training image" in msg and str(data / FOLDER / "img_002.png") in msg
    assert str(tmp_path / "masks" / FOLDER / "img_002.png") in msg and str(tmp_path / "masks" / "img_002.png") in msg
    with pytest.raises(DatasetError, match="is not a folder"):
        attach_masks(_items(data), "folder", str(tmp_path / "nowhere"))


def test_flat_mask_folder_and_other_extensions_are_found(tmp_path):
    data = _data(tmp_path / "data", n=2)
    masks = tmp_path / "masks"
    masks.mkdir()
    for img in (data / FOLDER).glob("*.png"):
        Image.new("L", Image.open(img).size, 255).save(masks / (img.stem + ".webp"), lossless=True)
    items = _items(data)
    attach_masks(items, "folder", str(masks))
    assert all(it.mask.path.parent == masks and it.mask.path.suffix == ".webp" for it in items)


def test_mask_sizes_other_aspect_refused_same_aspect_resized(tmp_path):
    data = _data(tmp_path / "data", sizes=((64, 64), (96, 64)), n=2)
    masks = tmp_path / "masks"
    (masks / FOLDER).mkdir(parents=True)
    Image.new("L", (32, 32), 255).save(masks / FOLDER / "img_000.png")  # half size, same shape: resized
    Image.new("L", (64, 64), 255).save(masks / FOLDER / "img_001.png")  # square mask for a 96x64 image
    with pytest.raises(DatasetError) as e:
        attach_masks(_items(data), "folder", str(masks))
    msg = str(e.value)
    assert f"{masks / FOLDER / 'img_001.png'} is 64x64, its image img_001.png 96x64" in msg and "img_000" not in msg
    Image.new("L", (48, 32), 255).save(masks / FOLDER / "img_001.png")
    items = _items(data)
    warnings = attach_masks(items, "folder", str(masks))
    assert len(warnings) == 1 and "resized" in warnings[0] and "img_000.png is 32x32" in warnings[0]
    assert load_mask(items[0]).shape == (64, 64) and bool((load_mask(items[0]) == 1).all())


def test_all_black_mask_and_transparent_image_are_refused(tmp_path):
    data = _data(tmp_path / "data", n=2)
    paths = _write_masks(data, tmp_path / "masks", lambda w, h, i: np.full((h, w), 255 * i, np.uint8))
    with pytest.raises(DatasetError) as e:
        attach_masks(_items(data), "folder", str(tmp_path / "masks"))
    assert "all black" in str(e.value) and str(paths[0]) in str(e.value) and str(paths[1]) not in str(e.value)
    img = data / FOLDER / "img_001.png"
    im = Image.open(img).convert("RGBA")
    im.putalpha(0)
    im.save(img)
    with pytest.raises(DatasetError, match="fully transparent.*img_001.png"):
        attach_masks(_items(data), "alpha")


def test_alpha_mask_on_images_without_alpha(tmp_path):
    data = _data(tmp_path / "data", n=3)
    with pytest.raises(DatasetError, match="none of the 3 training images has an alpha channel"):
        attach_masks(_items(data), "alpha")
    img = data / FOLDER / "img_001.png"
    im = Image.open(img).convert("RGBA")
    im.putalpha(Image.fromarray(_left_black(64, 64, 0), "L"))
    im.save(img)
    items = _items(data)
    warnings = attach_masks(items, "alpha")
    assert len(warnings) == 1 and "2 of 3 training image(s) have no alpha channel" in warnings[0]
    assert "img_000.png" in warnings[0] and "img_001.png" not in warnings[0]
    assert [it.mask is not None for it in items] == [False, True, False]
    assert torch.equal(latent_mask(items[0], False, (8, 8)), torch.ones(1, 8, 8)), "learned whole"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="masked_loss needs masks"):
        validate({"masked_loss": True})
    with pytest.raises(ConfigError, match="alpha_mask and conditioning_data_dir are both set"):
        validate({"alpha_mask": True, "conditioning_data_dir": "masks"})
    assert validate({"alpha_mask": True}).mask_source == "alpha"
    assert validate({"masked_loss": True, "conditioning_data_dir": "m"}).mask_source == "folder"
    assert validate({"conditioning_data_dir": "m"}).mask_source is None
    from core.config.fields import field_meta

    for name in ("masked_loss", "alpha_mask", "conditioning_data_dir"):  # the GUI form: Advanced, Dataset
        assert field_meta(name)["group"] == "data" and not field_meta(name)["basic"] and not field_meta(name)["families"]


def test_trainer_refuses_missing_masks_before_loading_the_model(tiny_sd15, tmp_path):
    data = _data(tmp_path / "data", n=2)
    (tmp_path / "masks" / FOLDER).mkdir(parents=True)
    cfg = tiny_config(tiny_sd15, data, tmp_path / "out", masked_loss=True, conditioning_data_dir=str(tmp_path / "masks"))
    assert Trainer(cfg, echo=lambda m: None).train() == 2
    err = [e for e in _events(tmp_path / "out") if e["type"] == "error"][0]["message"]
    assert "no mask for 2 training image(s)" in err and "img_000.png" in err
    assert not any(e.get("stage") == "load_model" for e in _events(tmp_path / "out"))


# --------------------------------------------------------------------------- the loss
def _hook_predictions(monkeypatch, objective_cls, shift_masked: float = 0.0):
    """Record the loss gradient w.r.t. every prediction; optionally add `shift_masked` to its left half."""
    grads = []
    orig = objective_cls.prediction

    def prediction(self, raw, batch):
        out = orig(self, raw, batch)
        if shift_masked:
            out = out.clone()
            out[..., : out.shape[-1] // 2] += shift_masked
        if out.requires_grad:
            out.register_hook(lambda g: grads.append(g.detach().clone()))
        return out

    monkeypatch.setattr(objective_cls, "prediction", prediction)
    return grads


def _family_config(family, request, data, out, **kw):
    if family == "flux":
        from tiny_flux import make_tiny_flux

        return tiny_config(make_tiny_flux("dev"), data, out, t5xxl_max_token_length=32, **kw)
    return tiny_config(request.getfixturevalue(f"tiny_{family}"), data, out, **kw)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_masked_half_does_not_contribute_to_loss_or_gradient(family, request, tmp_path, monkeypatch, one_thread):
    from core.models.ddpm import DDPMObjective
    from core.models.flux import FlowMatchObjective

    objective = FlowMatchObjective if family == "flux" else DDPMObjective
    data = _data(tmp_path / "data", n=2)
    _write_masks(data, tmp_path / "masks", _left_black)
    kw = dict(max_train_steps=1, masked_loss=True, conditioning_data_dir=str(tmp_path / "masks"))
    grads = _hook_predictions(monkeypatch, objective)
    train_in_process(_family_config(family, request, data, tmp_path / "a", **kw))
    g = grads[0]
    assert g.shape[-2:] == (8, 8)
    assert bool((g[..., :4] == 0).all()), "the masked (black) half got a gradient"
    assert bool((g[..., 4:] != 0).any())
    # a prediction changed only where the mask is black: the same loss
    monkeypatch.undo()
    _hook_predictions(monkeypatch, objective, shift_masked=100.0)
    train_in_process(_family_config(family, request, data, tmp_path / "b", **kw))
    loss = [[e["loss"] for e in _events(tmp_path / d) if e["type"] == "step"][0] for d in "ab"]
    assert loss[0] == loss[1]
    train_in_process(_family_config(family, request, data, tmp_path / "c", max_train_steps=1))
    unmasked = [e["loss"] for e in _events(tmp_path / "c") if e["type"] == "step"][0]
    assert unmasked > 100, "without the mask the shifted half counts (the test can fail)"


def _lora(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "lora.safetensors")


def _same_lora(a: Path, b: Path) -> bool:
    ta, tb = _lora(a), _lora(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("cache", [True, False])
def test_all_ones_mask_equals_no_mask_bit_for_bit(tiny_sd15, tmp_path, one_thread, cache):
    data = _data(tmp_path / "data", sizes=((64, 64), (96, 64), (64, 96)))
    _write_masks(data, tmp_path / "masks", lambda w, h, i: np.full((h, w), 255, np.uint8))
    common = dict(max_train_steps=3, flip_aug=True, cache_latents=cache)
    train_in_process(tiny_config(tiny_sd15, data, tmp_path / "plain", **common))
    train_in_process(tiny_config(tiny_sd15, data, tmp_path / "ones", masked_loss=True,
                                 conditioning_data_dir=str(tmp_path / "masks"), **common))
    assert _same_lora(tmp_path / "plain", tmp_path / "ones")
    _write_masks(data, tmp_path / "masks", lambda w, h, i: _pattern(w, h, i) | 1)
    train_in_process(tiny_config(tiny_sd15, data, tmp_path / "grey", masked_loss=True,
                                 conditioning_data_dir=str(tmp_path / "masks"), **common))
    assert not _same_lora(tmp_path / "plain", tmp_path / "grey"), "a real mask changes the LoRA"
    # alpha: opaque images (RGBA files) train as without a mask
    for img in (data / FOLDER).glob("*.png"):
        im = Image.open(img).convert("RGBA")
        im.save(img)
    train_in_process(tiny_config(tiny_sd15, data, tmp_path / "rgba", **common))
    train_in_process(tiny_config(tiny_sd15, data, tmp_path / "alpha", alpha_mask=True, **common))
    assert _same_lora(tmp_path / "rgba", tmp_path / "alpha")


# --------------------------------------------------------------------------- caching and resume
def test_masks_cached_on_disk_next_to_the_latents_and_reused(tiny_sd15, tmp_path):
    data = _data(tmp_path / "data", sizes=((64, 64), (96, 64)))
    paths = _write_masks(data, tmp_path / "masks", lambda w, h, i: _pattern(w, h, i) | 1)
    cache = tmp_path / "cache"
    common = dict(max_train_steps=1, flip_aug=True, cache_latents_to_disk=True, cache_dir=str(cache), masked_loss=True,
                  conditioning_data_dir=str(tmp_path / "masks"))
    t = train_in_process(tiny_config(tiny_sd15, data, tmp_path / "a", **common))
    assert t.masks.computed == 8 and t.masks.hits == 0
    files = sorted((cache / "latents").glob("mask_*.safetensors"))
    assert len(files) == 8
    first = {k: v.clone() for k, v in t.masks.mem.items()}
    t = train_in_process(tiny_config(tiny_sd15, data, tmp_path / "b", **common))
    assert t.masks.hits == 8 and t.masks.computed == 0 and t.latent_cache.hits == 8
    assert all(torch.equal(first[k], t.masks.mem[k]) for k in first)
    Image.fromarray(_left_black(64, 64, 0), "L").save(paths[0])  # a new mask for the first image
    t = train_in_process(tiny_config(tiny_sd15, data, tmp_path / "c", **common))
    assert t.masks.hits == 6 and t.masks.computed == 2, "a changed mask is made again"
    assert t.latent_cache.hits == 8, "its latents are still reused"
    idx = next(i for i, it in enumerate(t.ts.items) if it.path.name == paths[0].name)
    assert bool((t.masks.mem[(idx, False)][..., :4] == 0).all())
    assert bool((t.masks.mem[(idx, True)][..., 4:] == 0).all()), "flipped"


def test_sigkill_then_resume_with_masks_is_bit_identical(tiny_sd15, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = _data(tmp_path / "data", sizes=((64, 64), (96, 64), (64, 96)))
    _write_masks(data, tmp_path / "masks", lambda w, h, i: _pattern(w, h, i) | 1)
    out = sigkill_then_resume(tiny_sd15, data, tmp_path, flip_aug=True, masked_loss=True,
                              conditioning_data_dir=str(tmp_path / "masks"))
    log = (out / "lora" / "train.log").read_text()
    assert "Masked loss: 4 training image(s)" in log
    assert _same_lora(out, tmp_path / "reference"), "the resumed LoRA is not bit-identical"
    assert json.loads((out / "lora" / "status.json").read_text())["status"] == "completed"


def test_live_plan_says_how_many_images_have_masks(tmp_path):
    from core.runs.steps_plan import steps_plan
    from ui.run_view import plan_html

    data = _data(tmp_path / "data", n=3)
    paths = _write_masks(data, tmp_path / "masks", _left_black)
    paths[1].unlink()
    cfg = validate({"train_data_dir": str(data), "masked_loss": True, "conditioning_data_dir": str(tmp_path / "masks")})
    plan = steps_plan(data, cfg)
    assert plan.masks == f"Masks: 2 of 3 training images have a mask in {tmp_path / 'masks'}."
    assert any("No mask for img_001.png" in p and str(paths[1]) in p for p in plan.problems)
    assert 'id="plan-masks"' in plan_html(plan)
    plan = steps_plan(data, validate({"train_data_dir": str(data), "alpha_mask": True}))
    assert plan.masks.startswith("Masks: 0 of 3") and "alpha_mask: no training image has transparency." in plan.problems
    assert steps_plan(data, validate({"train_data_dir": str(data)})).masks == ""
