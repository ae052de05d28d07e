"""`python -m core models list | get` against a local stand-in for the hub (HF_ENDPOINT on 127.0.0.1): a complete
download, a resumed one (Range), a damaged one, gated repos with and without a token, offline and no network, a
file of the user's under the same name, too little disk, bad catalog files. The shipped catalog is checked too."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.models.catalog import CatalogError, load_catalog, read_catalog
from hub_standin import Hub

REPO = Path(__file__).resolve().parent.parent
A = bytes(range(256)) * 4096  # 1 MiB
B = b"second file " * 30000


def entry(name, files, *, repo="test/tiny", gated=False, shas=None, sizes=None):
    shas = shas if shas is not None else [""] * len(files)
    sizes = sizes or [len(c) for _, c in files]
    return (f'[[model]]\nname = "{name}"\ntitle = "Tiny {name}"\nfamily = "sd15"\nrepo = "{repo}"\n'
            f"files = {json.dumps([p for p, _ in files])}\nsize_bytes = {json.dumps(sizes)}\n"
            f"sha256 = {json.dumps(shas)}\nlicense = \"mit\"\ngated = {str(gated).lower()}\n"
            f'source = ["the test"]\nvram_tier = 4\n')


def get(hub_url, catalog: Path, name: str, to: Path, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
         "HF_HUB_ETAG_TIMEOUT": "5", **env}
    e.pop("HF_TOKEN", None) if "HF_TOKEN" not in env else None
    return subprocess.run([sys.executable, "-m", "core", "models", "get", name, "--catalog", str(catalog),
                           "--to", str(to)], cwd=REPO, env=e, capture_output=True, text=True, timeout=120)


@pytest.fixture
def hub():
    with Hub() as h:
        yield h


def test_complete_download_then_already_there(hub, tmp_path):
    import hashlib

    sha_a = hub.add("test/tiny", "unet/model.safetensors", A)
    hub.add("test/tiny", "vae.safetensors", B)
    cat = tmp_path / "catalog.toml"
    cat.write_text(entry("tiny", [("unet/model.safetensors", A), ("vae.safetensors", B)], shas=[sha_a, ""]))
    r = get(hub.url, cat, "tiny", tmp_path / "models")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "models" / "model.safetensors").read_bytes() == A
    assert (tmp_path / "models" / "vae.safetensors").read_bytes() == B
    assert not list((tmp_path / "models").glob("*.part"))
    assert "model.safetensors complete and verified (sha256)" in r.stdout
    assert "vae.safetensors complete and verified (sha256)" in r.stdout  # the hub's own sha256 (its LFS etag)
    assert "2 file(s) complete and verified" in r.stdout
    assert "Downloading model.safetensors: " in r.stdout and "%), " in r.stdout and "/s" in r.stdout  # progress
    assert hashlib.sha256(A).hexdigest() == sha_a
    gets = len([q for q in hub.requests if q[0] == "GET"])
    r = get(hub.url, cat, "tiny", tmp_path / "models")
    assert r.returncode == 0 and "model.safetensors is already there" in r.stdout
    assert len([q for q in hub.requests if q[0] == "GET"]) == gets  # nothing fetched again


def test_an_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    sha = hub.add("test/tiny", "model.safetensors", A)
    cat = tmp_path / "catalog.toml"
    cat.write_text(entry("tiny", [("model.safetensors", A)], shas=[sha]))
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.safetensors.part").write_bytes(A[:300_000])  # what a killed run leaves
    r = get(hub.url, cat, "tiny", models)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Resuming model.safetensors" in r.stdout
    assert ("GET", "/test/tiny/resolve/main/model.safetensors", "bytes=300000-") in hub.requests
    assert (models / "model.safetensors").read_bytes() == A and not (models / "model.safetensors.part").exists()


def test_a_damaged_download_is_reported_and_leaves_nothing_under_the_final_name(hub, tmp_path):
    hub.add("test/tiny", "model.safetensors", A)
    cat = tmp_path / "catalog.toml"
    cat.write_text(entry("tiny", [("model.safetensors", A)], shas=["ab" * 32]))
    r = get(hub.url, cat, "tiny", tmp_path / "models")
    assert r.returncode == 2
    assert "arrived damaged: its sha256 is" in r.stderr and "nothing was saved under its name" in r.stderr
    assert list((tmp_path / "models").iterdir()) == []


def test_gated_repos_say_which_page_to_open_and_what_the_token_lacks(hub, tmp_path):
    hub.add("test/gated", "model.safetensors", A)
    hub.gated.add("test/gated")
    cat = tmp_path / "catalog.toml"
    cat.write_text(entry("g", [("model.safetensors", A)], repo="test/gated", gated=True))
    r = get(hub.url, cat, "g", tmp_path / "m")
    assert r.returncode == 2 and "test/gated is gated: open https://huggingface.co/test/gated" in r.stderr
    assert "set your access token" in r.stderr and "accept the licence" in r.stderr
    r = get(hub.url, cat, "g", tmp_path / "m", HF_TOKEN="noaccess")
    assert r.returncode == 2 and "your Hugging Face account has no access yet" in r.stderr
    r = get(hub.url, cat, "g", tmp_path / "m", HF_TOKEN="bad")
    assert r.returncode == 2 and "refused the access token" in r.stderr
    assert "noaccess" not in r.stdout + r.stderr and " bad" not in r.stdout + r.stderr  # tokens are never printed
    r = get(hub.url, cat, "g", tmp_path / "m", HF_TOKEN="good")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == A


def test_offline_and_no_network_are_said_plainly(tmp_path):
    cat = tmp_path / "catalog.toml"
    cat.write_text(entry("tiny", [("model.safetensors", A)]))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = get(dead, cat, "tiny", tmp_path / "m")
    assert r.returncode == 2 and "Could not reach the Hugging Face hub" in r.stderr and "resumes" in r.stderr
    r = get(dead, cat, "tiny", tmp_path / "m", HF_HUB_OFFLINE="1")
    assert r.returncode == 2 and "Offline mode is on (HF_HUB_OFFLINE=1)" in r.stderr


def test_a_file_of_the_users_is_never_overwritten_and_the_disk_is_checked_first(hub, tmp_path):
    hub.add("test/tiny", "model.safetensors", A)
    cat = tmp_path / "catalog.toml"
    cat.write_text(entry("tiny", [("model.safetensors", A)]) + "\n" +
                   entry("huge", [("model.safetensors", A)], sizes=[10 ** 15]))
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.safetensors").write_bytes(b"my own file")
    r = get(hub.url, cat, "tiny", models)
    assert r.returncode == 2 and "Nothing was overwritten" in r.stderr
    assert (models / "model.safetensors").read_bytes() == b"my own file"
    r = get(hub.url, cat, "huge", tmp_path / "other")
    assert r.returncode == 2 and "Not enough free space" in r.stderr
    assert not any(q[0] == "GET" for q in hub.requests)


def test_catalog_files_are_checked_and_named_in_errors(tmp_path):
    bad = tmp_path / "catalog.toml"
    bad.write_text('[[model]]\nname = "x"\ntitle = "X"\nfamily = "sd15"\n')
    with pytest.raises(CatalogError, match=r"catalog.toml, model 'x': missing repo, files, size_bytes"):
        read_catalog(bad)
    bad.write_text(entry("x", [("a", A), ("b", B)], sizes=[1]))
    with pytest.raises(CatalogError, match="size_bytes has 1 values for 2 files"):
        read_catalog(bad)
    bad.write_text(entry("x", [("a", A)]).replace('family = "sd15"', 'family = "sd3"'))
    with pytest.raises(CatalogError, match="family 'sd3' is not one this program trains"):
        read_catalog(bad)
    bad.write_text("[[model]\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        read_catalog(bad)
    # a user's catalog.toml in a models folder adds entries; a missing folder (unplugged drive) is skipped
    good = tmp_path / "models"
    good.mkdir()
    (good / "catalog.toml").write_text(entry("mine", [("a", A)]))
    names = [e.name for e in load_catalog(folders=[good, tmp_path / "gone"])]
    assert "mine" in names and "sd15" in names


def test_the_shipped_catalog_lists_every_family_with_sources():
    entries = load_catalog()
    assert {e.family for e in entries} == {"sd15", "sdxl", "flux", "flux2_klein"}
    for e in entries:
        assert e.source and all(f.size > 0 for f in e.files), e.name
        assert any(s.startswith("https://") for s in e.source), e.name  # a page to check it against
    klein = next(e for e in entries if e.family == "flux2_klein")
    assert [f.name for f in klein.files] == ["flux-2-klein-base-4b.safetensors", "qwen_3_4b.safetensors",
                                             "flux2-vae.safetensors"]
    assert not klein.gated and klein.license == "apache-2.0"
    r = subprocess.run([sys.executable, "-m", "core", "models", "list", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and {m["name"] for m in json.loads(r.stdout)} == {e.name for e in entries}


def test_the_guided_start_offers_the_catalog_model_when_no_base_is_chosen(tiny_dataset):
    from core.config.guided import guided_start

    g = guided_start("character", "", "flux2_klein", str(tiny_dataset), 12)
    assert g.ok, g.problems
    assert "FLUX.2 [klein] 4B Base" in g.reasons[0] and "models get flux2-klein-base-4b" in g.reasons[0]
    g = guided_start("character", "", "flux", str(tiny_dataset), 24)
    assert "gated: accept its licence at https://huggingface.co/black-forest-labs/FLUX.1-dev" in g.reasons[0]
