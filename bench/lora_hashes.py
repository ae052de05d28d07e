"""Train one tiny LoRA per family on the CPU and print a hash of each saved file, as JSON.

For refactors that must not change results: run it before and after, and compare. The hash covers every tensor
(name, dtype, shape, bytes) and the metadata that says what the file is for (ss_base_model_version,
modelspec.architecture, ss_network_*); not the times and paths that differ from run to run.

    venv/bin/python bench/lora_hashes.py [--only sd15,sdxl,flux]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

KEPT_METADATA = ("ss_base_model_version", "modelspec.architecture", "ss_network_module", "ss_network_dim",
                 "ss_network_alpha", "ss_network_args", "modelspec.implementation")


def file_hash(path: Path) -> dict:
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        keys = sorted(f.keys())
        for k in keys:
            t = f.get_tensor(k)
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    kept = {k: meta[k] for k in KEPT_METADATA if k in meta}
    h.update(json.dumps(kept, sort_keys=True).encode())
    return {"sha256": h.hexdigest(), "tensors": len(keys), "metadata": kept}


def cases():
    from tiny_flux import make_tiny_flux
    from tiny_klein import make_tiny_klein
    from tiny_models import make_tiny_sd15, make_tiny_sdxl

    # the models at the same paths in every checkout (two checkouts' test caches differ in path)
    root = Path(tempfile.gettempdir()) / "lw-lora-hashes"
    sd15 = lambda: make_tiny_sd15(root / "sd15")  # noqa: E731
    dev = lambda: make_tiny_flux("dev", root / "flux-dev")  # noqa: E731
    flux = dict(t5xxl_max_token_length=32, resolution="64", bucket_reso_steps=32)
    return {
        "sd15": (sd15, {}),  # the text encoder trains too (the default)
        "sd15_locon_dora": (sd15, dict(conv_dim=2, conv_alpha=1, use_dora=True)),
        "sd15_loha": (sd15, dict(network_type="loha")),
        "sdxl": (lambda: make_tiny_sdxl(root / "sdxl"), {}),
        "flux_dev": (dev, flux),
        "flux_dev_attention": (dev, dict(flux, flux_lora_layers="attention")),
        "flux_schnell": (lambda: make_tiny_flux("schnell", root / "flux-schnell"), flux),
        "flux2_klein_base": (lambda: make_tiny_klein("base", root / "klein-base"),
                             dict(resolution="64", bucket_reso_steps=32, timestep_sampling="flux2_shift")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    import torch

    from tiny_models import make_tiny_dataset
    from train_helpers import tiny_config, train_in_process

    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_tiny_dataset(Path(tmp) / "data")  # image paths do not change results; model paths did

        for name, (model, kw) in cases().items():
            if args.only and name not in args.only.split(","):
                continue
            cfg = tiny_config(model(), data, Path(tmp) / name, max_train_steps=4, **kw)
            train_in_process(cfg)
            out[name] = file_hash(Path(cfg.output_dir) / "lora.safetensors")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
