"""Auto-captioning: every backend end to end on a tiny local model, the existing-caption policies, prefix,
summary, cancel, and the messages for missing models (the tests run offline)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.caption import CaptionError, caption_folder, get_backend
from core.cli import main
from tiny_captioners import (WORDS, make_images, make_label_lists, make_tiny_blip, make_tiny_florence2,
                             make_tiny_open_clip, make_tiny_wd14)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("captioners")


@pytest.fixture(scope="module")
def wd14(models) -> Path:
    return make_tiny_wd14(models / "tiny-wd14")


@pytest.fixture(scope="module")
def blip(models) -> Path:
    return make_tiny_blip(models / "tiny-blip")


def images(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    make_images(folder / "10_zqx")
    return folder


def caption(folder: Path, name: str) -> str:
    return next(folder.rglob(f"{name}.txt")).read_text(encoding="utf-8")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["caption", *args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- WD14 and the batch loop
def test_wd14_tags_prefix_policies_and_bad_files(tmp_path, wd14, capsys):
    folder = images(tmp_path)
    (folder / "10_zqx" / "broken.png").write_bytes(b"this is not a png")
    (folder / "10_zqx" / "green.txt").write_text("my own caption", encoding="utf-8")

    code, out, err = run_cli(capsys, str(folder), "--backend", "wd14", "--model", str(wd14), "--prefix", "zqx, ")
    assert code == 1, (out, err)  # one image failed
    assert "Captioned 2, skipped 1, failed 1" in out
    assert "broken.png: cannot be read as an image" in out
    red, blue = caption(folder, "red"), caption(folder, "blue")
    # character tags first, then by confidence; underscores -> spaces but not in emoticons; no rating tags
    assert red == "zqx, hatsune miku, red hair, 1girl, simple background, solo, ^_^"
    assert blue == "zqx, hatsune miku, 1girl, simple background, solo, ^_^"
    assert caption(folder, "green") == "my own caption"  # skipped
    assert "images" in err and "loading WD14 tagger" in err  # progress lines

    code, out, _ = run_cli(capsys, str(folder), "--backend", "wd14", "--model", str(wd14), "--prefix", "zqx, ",
                           "--existing", "append", "--exclude", "solo, Simple_Background", "--threshold", "0.9",
                           "--character-threshold", "0.95", "--json")
    summary = json.loads(out)
    assert (summary["captioned"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    assert caption(folder, "green") == "zqx, my own caption, 1girl"
    assert caption(folder, "red") == red  # its new tags (red hair, 1girl) were there already: not added twice
    failed = [r for r in summary["results"] if r["status"] == "failed"]
    assert failed[0]["path"].endswith("broken.png")

    code, out, _ = run_cli(capsys, str(folder), "--backend", "wd14", "--model", str(wd14), "--existing", "overwrite",
                           "--quiet")
    assert caption(folder, "green") == "hatsune miku, 1girl, simple background, solo, ^_^"
    raw = (folder / "10_zqx" / "green.txt").read_bytes()
    assert raw.decode("utf-8") == caption(folder, "green")
    assert not list(folder.rglob(".*.tmp"))  # written atomically, nothing left behind


def test_cancel_unload_and_progress(tmp_path, wd14):
    folder = images(tmp_path)
    backend = get_backend("wd14")(str(wd14), device="cpu")
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.done == 1:
            cancel.set()

    summary = caption_folder(folder, backend, batch_size=1, progress=progress, cancel=cancel)
    assert summary.cancelled and len(summary.captioned) == 1
    assert "cancelled" in summary.headline
    assert len(list(folder.rglob("*.txt"))) == 1
    assert backend._session is None and not backend.loaded  # unloaded after the batch
    assert any(p.eta_s is not None for p in seen) and "left" in seen[-1].text


def test_nothing_to_do_does_not_load_the_model(tmp_path):
    folder = images(tmp_path)
    for p in folder.rglob("*.png"):
        p.with_suffix(".txt").write_text("done", encoding="utf-8")
    backend = get_backend("wd14")(str(tmp_path / "no-model-here"))
    summary = caption_folder(folder, backend)
    assert len(summary.skipped) == 3 and not backend.loaded


# ----------------------------------------------------------------------------- errors, offline
def test_missing_model_offline_says_what_to_do(tmp_path, capsys):
    folder = images(tmp_path)
    code, _, err = run_cli(capsys, str(folder), "--backend", "wd14", "--model", "lora-workshop-tests/no-such-tagger")
    assert code == 2
    assert "lora-workshop-tests/no-such-tagger" in err
    assert "hf download lora-workshop-tests/no-such-tagger --local-dir models/captioners/no-such-tagger" in err
    assert not list(folder.rglob("*.txt"))

    code, _, err = run_cli(capsys, str(folder), "--backend", "blip", "--model", str(tmp_path))
    assert code == 2 and "is not a BLIP model folder" in err and "config.json" in err

    code, _, err = run_cli(capsys, str(tmp_path / "nope"), "--backend", "wd14")
    assert code == 2 and "Folder not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, str(tmp_path / "empty"), "--backend", "wd14")
    assert code == 2 and "no images found" in err

    code, _, err = run_cli(capsys, str(folder), "--backend", "clip-interrogator", "--caption-model",
                           str(tmp_path / "missing"))
    assert code == 2 and "BLIP model" in err and "not found" in err


def test_clip_interrogator_models_offline(tmp_path, blip, capsys):
    folder = images(tmp_path)
    args = [str(folder), "--backend", "clip-interrogator", "--caption-model", str(blip)]
    code, _, err = run_cli(capsys, *args, "--model", "lora-workshop-tests/no-such-clip")  # a hub repo
    assert code == 2 and "Could not get lora-workshop-tests/no-such-clip" in err and "hf download" in err
    code, _, err = run_cli(capsys, *args, "--model", "ViT-B-32/no-such-tag")
    assert code == 2 and "open_clip has no 'no-such-tag' weights for ViT-B-32; known: openai" in err


def test_unknown_option_for_the_backend_is_refused():
    with pytest.raises(CaptionError, match="unknown option"):
        get_backend("wd14")("", threshold=0.5, mode="fast")


def test_importing_the_captioners_imports_no_ml_library():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from core.caption import backends; import core.caption.cli\n"
            "print(len(backends()), sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'open_clip', "
            "'clip_interrogator') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "[]"]


# ----------------------------------------------------------------------------- the transformers backends
def test_blip_end_to_end(tmp_path, blip, capsys):
    folder = images(tmp_path)
    code, out, err = run_cli(capsys, str(folder), "--backend", "blip", "--model", str(blip), "--prefix", "zqx, ",
                             "--max-length", "8", "--num-beams", "1", "--device", "cpu")
    assert code == 0, (out, err)
    assert "Captioned 3, skipped 0, failed 0" in out
    for name in ("red", "blue", "green"):
        text = caption(folder, name)
        assert text.startswith("zqx, ") and len(text) > len("zqx, "), text


def test_florence2_end_to_end(tmp_path, models, capsys):
    model = make_tiny_florence2(models / "tiny-florence2")
    folder = images(tmp_path)
    for task in ("detailed", "brief"):
        code, out, err = run_cli(capsys, str(folder), "--backend", "florence2", "--model", str(model), "--task", task,
                                 "--max-length", "8", "--num-beams", "2", "--prefix", "zqx", "--existing",
                                 "overwrite")
        assert code == 0, (out, err)
        text = caption(folder, "red")
        assert text.startswith("zqx, ") and len(text) > len("zqx, ") and "<" not in text, text


def test_clip_interrogator_fast_and_classic(tmp_path, models, blip, capsys):
    clip = make_tiny_open_clip(models / "tiny-open-clip")
    labels = make_label_lists(tmp_path / "labels")
    folder = images(tmp_path)
    mediums = (labels / "mediums.txt").read_text(encoding="utf-8").split("\n")[:-1]
    cache = tmp_path / "ci-cache"
    for mode in ("fast", "classic"):
        code, out, err = run_cli(capsys, str(folder), "--backend", "clip-interrogator", "--model", str(clip),
                                 "--caption-model", str(blip), "--labels", str(labels), "--cache-dir", str(cache),
                                 "--mode", mode, "--existing", "overwrite", "--prefix", "zqx, ")
        assert code == 0, (out, err)
        text = caption(folder, "blue")
        sentence = text.split(",")[1].strip()  # the tiny BLIP's words come first
        assert text.startswith("zqx, ") and sentence and sentence.split()[0] in WORDS, text
        if mode == "classic":  # caption, medium artist, trending, movement, flavors
            assert any(f", {m} " in text for m in mediums), text
    assert list(cache.glob("*_flavors.safetensors"))  # the term embeddings are kept for the next run


def test_the_bad_file_corpus_is_captioned_without_a_crash(tmp_path, wd14):
    """The dataset tests' corpus (corrupt, truncated, empty, text named .png, CMYK, 16-bit, palette with
    transparency, a decompression bomb, EXIF-rotated, non-ASCII names, a cp1252 caption ...): every
    picture that can be read gets a caption, every one that cannot is reported by name with the reason,
    and no picture is changed."""
    from dataset_corpus import hash_tree, make_corpus

    root = tmp_path / "corpus"
    kinds = make_corpus(root)
    pictures = {k: v for k, v in hash_tree(root).items() if not k.endswith(".txt")}
    summary = caption_folder(root, get_backend("wd14")(str(wd14), device="cpu"), existing="overwrite",
                             prefix="zqx, ")
    failed = {r.path.relative_to(root).as_posix(): r.reason for r in summary.failed}
    unreadable = {name for name, kind in kinds.items()
                  if kind in ("unreadable", "truncated", "empty", "not_an_image", "too_large")}
    assert set(failed) == unreadable, failed
    assert all(reason for reason in failed.values())
    assert "too large to open safely" in failed["bomb.png"], failed["bomb.png"]
    captioned = {r.path.relative_to(root).as_posix() for r in summary.captioned}
    readable = {name for name in kinds if name not in unreadable and not name.endswith(".txt")}
    assert captioned == readable, (captioned ^ readable)
    for name in captioned:
        text = (root / name).with_suffix(".txt").read_bytes().decode("utf-8")
        assert text.startswith("zqx, ") and len(text) > len("zqx, "), (name, text)
    after = {k: v for k, v in hash_tree(root).items() if not k.endswith(".txt")}
    assert after == pictures  # the pictures themselves are untouched
