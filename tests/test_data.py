"""Dataset behaviour: captions, trigger word, shuffle/keep_tokens, buckets, regularization, epochs."""
from __future__ import annotations

import random

from PIL import Image

from core.data.buckets import BucketChooser, make_buckets
from core.data.dataset import TrainingSet, add_trigger, load_image, load_items, process_caption, read_caption, sdxl_meta


def _img(path, size, color=(200, 50, 50), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)
    return path


def test_trigger_word_is_prepended_only_where_missing():
    assert add_trigger("a dog on grass", "zqx") == "zqx, a dog on grass"
    assert add_trigger("photo of zqx dog", "zqx") == "photo of zqx dog"
    assert add_trigger("ZQX, dog", "zqx") == "ZQX, dog"
    assert add_trigger("zqxy dog", "zqx") == "zqx, zqxy dog"
    assert add_trigger("", "zqx") == "zqx"


def test_shuffle_keeps_first_tokens_and_dropout_empties():
    rng = random.Random(0)
    seen = {process_caption("zqx, a, b, c, d, e", rng, shuffle=True, keep_tokens=1, dropout=0) for _ in range(30)}
    assert all(s.startswith("zqx, ") for s in seen) and len(seen) > 5
    assert all(sorted(s.split(", ")) == ["a", "b", "c", "d", "e", "zqx"] for s in seen)
    drops = [process_caption("zqx, a", rng, shuffle=False, keep_tokens=0, dropout=0.5) for _ in range(400)]
    assert 120 < drops.count("") < 280


def test_caption_encodings(tmp_path):
    (tmp_path / "a.txt").write_bytes("zqx, café\n".encode("cp1252"))
    text, note = read_caption(tmp_path / "a.txt")
    assert text == "zqx, café" and "not UTF-8" in note
    (tmp_path / "b.txt").write_bytes("\ufeffzqx,  日本\n".encode("utf-8"))
    assert read_caption(tmp_path / "b.txt") == ("zqx, 日本", None)


def test_buckets_follow_kohya_rules():
    buckets = make_buckets((512, 512), 256, 1024, 64)
    assert (512, 512) in buckets and (768, 320) in buckets and (320, 768) in buckets
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    chooser = BucketChooser((512, 512), min_reso=256, max_reso=1024, step=64)
    wide = chooser.choose((1600, 900))
    assert wide.bucket[0] > wide.bucket[1]
    assert wide.resized[0] >= wide.bucket[0] and wide.resized[1] >= wide.bucket[1]
    small = BucketChooser((512, 512), no_upscale=True, step=64).choose((300, 200))
    assert small.bucket == (256, 192)
    square = BucketChooser((512, 512), enable=False).choose((1000, 500))
    assert square.bucket == (512, 512) and square.crop_left_top == (256, 0)


def test_items_captions_exif_and_alpha(tmp_path):
    root = tmp_path / "data"
    _img(root / "5_zqx toy" / "a.png", (96, 64))
    (root / "5_zqx toy" / "a.txt").write_text("red toy car", encoding="utf-8")
    _img(root / "5_zqx toy" / "b.png", (64, 64))  # no caption: the folder name is the caption
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.save(root / "5_zqx toy" / "c.png")
    rotated = Image.new("RGB", (96, 64), (10, 20, 30))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90: displayed as 64x96
    rotated.save(root / "5_zqx toy" / "d.jpg", exif=exif)
    chooser = BucketChooser((64, 64), min_reso=32, max_reso=128, step=32)
    items = load_items(root, is_reg=False, trigger="zqx", caption_ext=".txt", chooser=chooser)
    by_name = {it.path.name: it for it in items}
    assert by_name["a.png"].caption == "zqx, red toy car"
    assert by_name["b.png"].caption == "zqx toy"
    assert by_name["d.jpg"].size == (64, 96)
    px = load_image(by_name["c.png"])
    assert px.shape == (3, 64, 64) and px.min() > 0.99, "transparent pixels are composited on white"
    meta = sdxl_meta(by_name["a.png"])
    assert meta["original_size"] == (64, 96) and meta["target_size"][::-1] == by_name["a.png"].placement.bucket


def test_epochs_repeats_regularization_and_determinism(tmp_path):
    root, reg = tmp_path / "data", tmp_path / "reg"
    for i in range(3):
        _img(root / "4_zqx" / f"{i}.png", (64, 64))
    _img(reg / "1_toy" / "r.png", (64, 64))
    chooser = BucketChooser((64, 64), min_reso=32, max_reso=128, step=32)
    items = load_items(root, is_reg=False, trigger="", caption_ext=".txt", chooser=chooser)
    regs = load_items(reg, is_reg=True, trigger="zqx", caption_ext=".txt", chooser=chooser)
    assert regs[0].caption == "toy", "the trigger word is never added to regularization captions"
    ts = TrainingSet(items, regs, batch_size=2, seed=1, flip_aug=True)
    assert len(ts.uses) == 24  # 3 images x 4 repeats, plus as many regularization uses
    b0 = ts.epoch_batches(0)
    assert sum(len(b) for b in b0) == 24 and len(b0) == 12
    assert [[(s.item_index, s.flip) for s in b] for b in b0] == [[(s.item_index, s.flip) for s in b] for b in ts.epoch_batches(0)]
    assert b0 != ts.epoch_batches(1)
    assert ts.folder_stats() == {"4_zqx": {"n_repeats": 4, "img_count": 3}}
    assert any(s.flip for b in b0 for s in b) and not all(s.flip for b in b0 for s in b)
