"""Seconds per training step and peak memory, through the real trainer, printed as JSON.

Real-size architectures are built from the shipped configs with random weights (nothing is
downloaded); `--size tiny` uses the test suite's tiny models. Each case of `--matrix` runs in its
own process so that peak memory is measured per case.

  python bench/train_step.py --family sd15 --size tiny
  python bench/train_step.py --family sdxl --size real --resolution 1024 --gradient-checkpointing
  python bench/train_step.py --matrix cpu      # the CPU figures in docs/benchmarks.md
  python bench/train_step.py --matrix gpu      # the GPU figures
  python bench/train_step.py --family flux --size real --blocks 1,1 --resolution 256
  python bench/train_step.py --matrix flux-cpu # real-width Flux with 1-2 blocks, extrapolated to 19 + 38 blocks
  python bench/train_step.py --matrix klein-cpu  # real-width FLUX.2 klein 4B with 1-2 blocks, to 5 + 20 blocks

Flux at real width: the transformer has the real width (3072, 24 heads) and `--blocks D,S` double and single
blocks (19,38 is the real model); CLIP-L and the autoencoder are real size; T5-XXL has its real width (4096) with
`--t5-layers` layers (24 is the real one; its outputs are cached and it is freed before the first step, so it adds
to loading time and to the peak only before training). The flux-cpu matrix measures (1,1), (2,1) and (1,2) blocks
and extrapolates time and memory linearly per block to the real 19 + 38.

FLUX.2 klein at real width: the 4B transformer (3072, 24 heads) with `--blocks D,S` (5,20 is the real 4B), the real
FLUX.2 autoencoder, and a Qwen3 of the real width (2560, so its stacked layers 9/18/27 have klein's 7680) and 27
layers but 2 heads, a 256-wide MLP and the test tokenizer's vocabulary: its outputs are cached and it is freed
before the first step, so it changes loading and caching only (`core estimate` models the real Qwen3 there).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MATRICES = {
    "cpu": [
        ["--family", "sd15", "--size", "tiny", "--resolution", "64"],
        ["--family", "sd15", "--size", "tiny", "--resolution", "64", "--no-cache-latents"],
        ["--family", "sd15", "--size", "tiny", "--resolution", "64", "--gradient-checkpointing"],
        ["--family", "sdxl", "--size", "tiny", "--resolution", "64"],
        ["--family", "sd15", "--size", "real", "--resolution", "256", "--steps", "3"],
        ["--family", "sd15", "--size", "real", "--resolution", "256", "--steps", "3", "--gradient-checkpointing"],
    ],
    "flux-cpu": [
        ["--family", "flux", "--size", "real", "--resolution", "256", "--steps", "2", "--blocks", b,
         "--network-train-unet-only", "--t5-layers", "1", "--mixed-precision", "no"]
        for b in ("1,1", "2,1", "1,2")
    ],
    "klein-cpu": [
        ["--family", "flux2_klein", "--size", "real", "--resolution", "256", "--steps", "2", "--blocks", b,
         "--network-train-unet-only", "--mixed-precision", "no"]
        for b in ("1,1", "2,1", "1,2")
    ],
    "gpu": [
        [*base, *extra]
        for base in (["--family", "sd15", "--size", "real", "--resolution", "512", "--mixed-precision", "bf16"],
                     ["--family", "sdxl", "--size", "real", "--resolution", "1024", "--mixed-precision", "bf16"])
        for extra in ([], ["--gradient-checkpointing"], ["--no-cache-latents"],
                      ["--gradient-checkpointing", "--network-train-unet-only", "--optimizer", "AdamW8bit"])
    ] + [
        ["--family", "flux", "--size", "real", "--resolution", "1024", "--mixed-precision", "bf16", "--blocks", "19,38",
         "--t5-layers", "24", "--network-train-unet-only", "--gradient-checkpointing", *extra]
        for extra in ([], ["--optimizer", "AdamW8bit"])
    ],
}


def real_flux_components(blocks: tuple[int, int], t5_layers: int):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    from core.families import family_module
    from core.models.loading import shipped_config_dir
    from tiny_flux import t5_tokenizer

    folder = shipped_config_dir("flux-dev")
    torch.manual_seed(0)
    tcfg = dict(FluxTransformer2DModel.load_config(folder / "transformer"))
    tcfg.update(num_layers=blocks[0], num_single_layers=blocks[1])
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tr = FluxTransformer2DModel.from_config(tcfg).to(dtype)
    t5cfg = T5Config.from_pretrained(folder / "text_encoder_2")
    t5cfg.num_layers = t5_layers
    parts = dict(transformer=tr, vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")).to(dtype),
                 text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")).to(dtype),
                 tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                 text_encoder_2=T5EncoderModel(t5cfg).to(dtype), tokenizer_2=t5_tokenizer(),
                 scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"))
    return family_module("flux").components(FluxPipeline(**parts), "random flux", False)


def real_klein_components(blocks: tuple[int, int]):
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from core.families import family_module
    from core.models.loading import shipped_config_dir
    from tiny_klein import qwen_tokenizer

    folder = shipped_config_dir("flux2_klein", "base-4b")
    torch.manual_seed(0)
    tcfg = dict(Flux2Transformer2DModel.load_config(folder / "transformer"))
    tcfg.update(num_layers=blocks[0], num_single_layers=blocks[1])
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tok = qwen_tokenizer()
    real = Qwen3Config.from_pretrained(folder / "text_encoder")
    qcfg = Qwen3Config(hidden_size=real.hidden_size, num_hidden_layers=27, num_attention_heads=2, num_key_value_heads=1,
                       head_dim=128, intermediate_size=256, vocab_size=len(tok), tie_word_embeddings=True,
                       max_position_embeddings=1024, rms_norm_eps=real.rms_norm_eps, pad_token_id=tok.pad_token_id)
    parts = dict(transformer=Flux2Transformer2DModel.from_config(tcfg).to(dtype),
                 vae=AutoencoderKLFlux2.from_config(AutoencoderKLFlux2.load_config(folder / "vae")).to(dtype),
                 text_encoder=Qwen3ForCausalLM(qcfg).to(dtype), tokenizer=tok,
                 scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"))
    return family_module("flux2_klein").components(Flux2KleinPipeline(**parts), "random klein", False)


def real_components(family: str):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from core.families import family_module
    from core.models.loading import shipped_config_dir

    folder = shipped_config_dir(family)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    parts = dict(unet=unet, vae=vae, tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                 text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")))
    if family == "sdxl":
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    from diffusers import EulerDiscreteScheduler

    fam = family_module(family)
    sched = EulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    extra = {} if family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                          "requires_safety_checker": False}
    pipe = fam.pipeline_class()(scheduler=sched, **parts, **extra)
    return fam.components(pipe, f"random {family}", False)


def make_images(folder: Path, n: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    sub = folder / "1_bench"
    sub.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text("bench, a photo", encoding="utf-8")
    return folder


def run_case(args) -> dict:
    import torch

    import core.train.trainer as trainer_mod
    from core.config.toml_io import validate

    if args.size == "real":
        blocks = tuple(int(x) for x in args.blocks.split(","))
        if args.family == "flux":
            comps = real_flux_components(blocks, args.t5_layers)
        elif args.family == "flux2_klein":
            comps = real_klein_components(blocks)
        else:
            comps = real_components(args.family)
        trainer_mod.load_components = lambda *a, **k: comps
        model = "random"
    elif args.family == "flux":
        from tiny_flux import make_tiny_flux

        model = str(make_tiny_flux("dev"))
    elif args.family == "flux2_klein":
        from tiny_klein import make_tiny_klein

        model = str(make_tiny_klein("base"))
    else:
        from tiny_models import make_tiny_sd15, make_tiny_sdxl

        model = str(make_tiny_sd15() if args.family == "sd15" else make_tiny_sdxl())
    flux = {"t5xxl_max_token_length": 64} if args.family == "flux" else {}
    steps = args.steps + 1  # the first step (allocation, autotuning) is not counted
    with tempfile.TemporaryDirectory() as tmp:
        data = make_images(Path(tmp) / "data", max(2, args.batch * 2), args.resolution)
        cfg = validate(dict(
            pretrained_model_name_or_path=model, train_data_dir=str(data), output_dir=str(Path(tmp) / "out"),
            output_name="bench", resolution=str(args.resolution), min_bucket_reso=32, bucket_reso_steps=32,
            max_bucket_reso=max(1024, args.resolution), train_batch_size=args.batch, max_train_steps=steps,
            network_dim=args.rank, network_alpha=args.rank / 2, cache_latents=args.cache_latents,
            gradient_checkpointing=args.gradient_checkpointing, mixed_precision=args.mixed_precision,
            network_train_unet_only=args.network_train_unet_only, optimizer_type=args.optimizer,
            sample_every_n_epochs=0, save_state_every_n_steps=10**6, model_family=args.family, **flux))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = trainer_mod.Trainer(cfg, echo=lambda m: None)
        code = t.train()
        events = [json.loads(x) for x in t.run.events_file.read_text().splitlines()]
        if code != 0:
            return {"error": events[-1].get("message"), **vars(args)}
        times = [e["time"] for e in events if e["type"] == "step"]
    sec = (times[-1] - times[0]) / max(1, len(times) - 1)
    if torch.cuda.is_available():
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    else:
        import resource

        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_max_rss"
    return {
        "family": args.family, "size": args.size, "resolution": args.resolution, "batch": args.batch,
        "rank": args.rank, "cache_latents": args.cache_latents, "gradient_checkpointing": args.gradient_checkpointing,
        "mixed_precision": args.mixed_precision if torch.cuda.is_available() else "no",
        "unet_only": args.network_train_unet_only, "optimizer": args.optimizer,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "steps_timed": len(times) - 1, "sec_per_step": round(sec, 4), "it_per_s": round(1 / sec, 3) if sec else None,
        "peak_mem_mib": round(peak, 1), "peak_kind": kind,
        **({"blocks": args.blocks, "t5_layers": args.t5_layers} if args.family == "flux" and args.size == "real" else {}),
        **({"blocks": args.blocks} if args.family == "flux2_klein" and args.size == "real" else {}),
    }


def extrapolate_flux(results: list[dict], real: tuple[int, int] = (19, 38)) -> dict:
    """Time and peak memory of (1,1), (2,1), (1,2) blocks -> per double block, per single block, the rest, and
    the real model's blocks (Flux.1 19 + 38, klein 4B 5 + 20; linear in the block counts)."""
    by = {r["blocks"]: r for r in results}
    out = {"extrapolated_to": f"{real[0]},{real[1]}", "basis": "linear per block from (1,1), (2,1), (1,2) at real width"}
    for key in ("sec_per_step", "peak_mem_mib"):
        base, d, s = by["1,1"][key], by["2,1"][key] - by["1,1"][key], by["1,2"][key] - by["1,1"][key]
        out[f"{key}_per_double_block"] = round(d, 3)
        out[f"{key}_per_single_block"] = round(s, 3)
        out[key] = round(base + (real[0] - 1) * d + (real[1] - 1) * s, 2)
    out["it_per_s"] = round(1 / out["sec_per_step"], 4) if out["sec_per_step"] > 0 else None
    out["device"] = results[0]["device"]
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["sd15", "sdxl", "flux", "flux2_klein"], default="sd15")
    p.add_argument("--blocks", default="", help="Flux / klein at real size: double,single blocks (default the real "
                                                "model: 19,38 Flux.1, 5,20 klein 4B)")
    p.add_argument("--t5-layers", type=int, default=24, help="Flux at real size: T5-XXL layers (24 = the real one)")
    p.add_argument("--size", choices=["tiny", "real"], default="tiny")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cache-latents", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--network-train-unet-only", action="store_true")
    p.add_argument("--optimizer", default="AdamW")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="bf16")
    p.add_argument("--matrix", choices=sorted(MATRICES), help="run a set of cases, each in its own process")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.matrix:
        results = []
        for case in MATRICES[args.matrix]:
            t0 = time.time()
            r = subprocess.run([sys.executable, __file__, *case], capture_output=True, text=True)
            lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
            res = json.loads(lines[-1]) if lines else {"case": case, "error": r.stderr[-800:]}
            res["wall_s"] = round(time.time() - t0, 1)
            results.append(res)
            print(json.dumps(res), flush=True)
        if args.matrix in ("flux-cpu", "klein-cpu") and all("error" not in r for r in results):
            print(json.dumps(extrapolate_flux(results, (19, 38) if args.matrix == "flux-cpu" else (5, 20))), flush=True)
        return 0 if all("error" not in r for r in results) else 1
    args.blocks = args.blocks or ("5,20" if args.family == "flux2_klein" else "19,38")
    print(json.dumps(run_case(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
