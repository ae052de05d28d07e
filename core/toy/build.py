"""Build the toy base model: a small Stable Diffusion 1.5 pipeline trained from scratch on drawn shapes.

    python -m core.toy.build --out models/toy-sd15            # the shipped model (about 40 min, 2 CPU cores)
    python -m core.toy.build --out /tmp/toy --quick           # a smoke test (2-3 min, poor quality)

The result is an ordinary diffusers ``StableDiffusionPipeline`` folder (``UNet2DConditionModel``,
``AutoencoderKL``, ``CLIPTextModel``, the real CLIP BPE tokenizer shipped in
``core/models/configs/clip_tokenizer``, the SD1.5 ``PNDMScheduler`` config), loaded by the same
code as any SD1.5 model. It is just small: 32 px images, a x4 VAE (8x8x4 latents), a UNet with the
SD1.5 block layout and narrow channels, a 4-layer 64-wide text encoder. Weights are stored in fp16
(loaders cast them to fp32) to keep the folder small.

Stages:
1. VAE: trained on every shape the demo uses (the base shapes, the demo star, and a few more), so it
   is a general codec of flat shapes.
2. UNet + text encoder, jointly, from scratch: epsilon prediction on the SD1.5 noise schedule,
   min-SNR weighting, 10% empty captions (for classifier-free guidance), EMA of the weights. They
   see only circles, squares and triangles: the star (the demo concept) stays unknown to them.
3. Save, reload through ``core.models.loading.load_pipeline``, and measure: VAE reconstruction
   and how often generated images follow "a <color> <shape>" prompts (``core.toy.checker``).
   The figures go to ``<out>/toy_model.json``.

Everything is seeded, single-process and on 2 CPU threads, so a build is reproducible on the same
library versions.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import shapes as S
from .measure import measure, to_tensor
from .work import Paused, Progress, Work, rng_state, set_rng_state

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "core" / "models" / "configs"
BUILD_VERSION = 1


@dataclass
class Plan:
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 2e-3
    unet_steps: int = 2200
    unet_batch: int = 64
    unet_lr: float = 8e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    eval_seeds: int = 2  # images per prompt when measuring prompt following (45 prompts)
    seed: int = 0
    vae_from: str = ""  # take the VAE from this toy model folder instead of training it

    @classmethod
    def quick(cls) -> "Plan":
        return cls(vae_steps=150, unet_steps=150, warmup=20, ema_decay=0.95, eval_seeds=1)


# ----------------------------------------------------------------------------- architecture

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8,
    sample_size=S.SIZE,
)
UNET_CONFIG = dict(
    sample_size=S.SIZE // 4, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 96, 96, 96), layers_per_block=2, cross_attention_dim=64, attention_head_dim=8,
    norm_num_groups=32,
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64, layer_norm_eps=1e-5,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,  # as in the SD1.5 text encoder config
)


def make_models(seed: int):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(seed + 2)
    te = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return vae, unet, te


def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CONFIGS / "clip_tokenizer"))


def noise_scheduler():
    from diffusers import DDPMScheduler

    cfg = json.loads((CONFIGS / "sd15" / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    keep = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset", "clip_sample")
    return DDPMScheduler(**{k: cfg[k] for k in keep}, prediction_type="epsilon")


# ----------------------------------------------------------------------------- helpers

def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def setup_torch(threads: int = 2) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


# ----------------------------------------------------------------------------- stage 1: VAE

def train_vae(vae, plan: Plan, progress: Progress, work: Work) -> tuple[list[float], float]:
    """Train the VAE; returns (losses, seconds spent, over all sessions)."""
    import torch

    rng = np.random.default_rng(plan.seed + 100)
    gen = torch.Generator().manual_seed(plan.seed + 101)
    opt = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0, fused=True)
    state = work.load("vae")
    step0, losses, seconds = 0, [], 0.0
    if state:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        set_rng_state(rng, state["rng"])
        gen.set_state(state["gen"])
        step0, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
        progress.say(f"vae: continuing from step {step0}")
    else:
        # Start with a small posterior std (logvar -8): latents are not drowned in sampling noise while the
        # codec learns. The KL term is tiny, so the std stays small and sampled latents (which the trainer's
        # latent cache draws) decode like the mean.
        with torch.no_grad():
            vae.quant_conv.bias[vae.config.latent_channels:] = -8.0
    vae.train()
    t_start = time.time()
    st = progress.stage("vae", plan.vae_steps, step0)
    for step in range(step0, plan.vae_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, plan.vae_steps, plan.vae_lr, plan.warmup)
        images, _ = S.batch(rng, plan.vae_batch, S.ALL_SHAPES)
        x = to_tensor(images)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + 1e-6 * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        st.step(step + 1, loss=float(np.mean(losses[-50:])))
        if work.out_of_time() and step + 1 < plan.vae_steps:
            work.save("vae", {"model": vae.state_dict(), "opt": opt.state_dict(), "rng": rng_state(rng),
                              "gen": gen.get_state(), "step": step + 1, "losses": losses,
                              "seconds": seconds + time.time() - t_start})
            raise Paused(f"vae step {step + 1}/{plan.vae_steps}")
    vae.eval()
    return losses, seconds + time.time() - t_start


def latent_scale(vae, seed: int, n: int = 512) -> float:
    """1 / std of the latents, as SD's scaling_factor, so the UNet sees unit-variance latents."""
    import torch

    rng = np.random.default_rng(seed + 200)
    images, _ = S.batch(rng, n, S.BASE_SHAPES)
    with torch.no_grad():
        z = vae.encode(to_tensor(images)).latent_dist.mean
    return float(round(1.0 / z.std().item(), 5))


# ----------------------------------------------------------------------------- stage 2: UNet + text encoder

class TextBank:
    """Token ids of every caption, computed once."""

    def __init__(self, tok):
        self.tok = tok
        self.ids: dict = {}

    def __call__(self, captions: list[str]):
        import torch

        for c in captions:
            if c not in self.ids:
                self.ids[c] = self.tok([c], padding="max_length", max_length=self.tok.model_max_length,
                                       truncation=True, return_tensors="pt").input_ids[0]
        return torch.stack([self.ids[c] for c in captions])


def train_unet(vae, unet, te, plan: Plan, progress: Progress, work: Work) -> tuple[list[float], float]:
    """Train the UNet and the text encoder together; leaves their EMA weights in place."""
    import torch

    sched = noise_scheduler()
    ac = sched.alphas_cumprod
    bank = TextBank(tokenizer())
    rng = np.random.default_rng(plan.seed + 300)
    gen = torch.Generator().manual_seed(plan.seed + 301)
    params = list(unet.parameters()) + list(te.parameters())
    decay = [p for p in unet.parameters() if p.ndim > 1]
    no_decay = [p for p in unet.parameters() if p.ndim <= 1]
    # No weight decay on the text encoder: tokens it never sees (the demo's trigger word) keep their init.
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0},
                             {"params": list(te.parameters()), "weight_decay": 0.0}],
                            lr=plan.unet_lr, betas=(0.9, 0.99), fused=True)
    ema = [p.detach().clone() for p in params]
    state = work.load("unet")
    step0, losses, seconds = 0, [], 0.0
    if state:
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["te"])
        opt.load_state_dict(state["opt"])
        for e, v in zip(ema, state["ema"]):
            e.copy_(v)
        set_rng_state(rng, state["rng"])
        gen.set_state(state["gen"])
        step0, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
        progress.say(f"unet+text: continuing from step {step0}")
    unet.train()
    te.train()
    sf = vae.config.scaling_factor
    t_start = time.time()
    st = progress.stage("unet+text", plan.unet_steps, step0)
    for step in range(step0, plan.unet_steps):
        lr = lr_at(step, plan.unet_steps, plan.unet_lr, plan.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        images, specs = S.batch(rng, plan.unet_batch, S.BASE_SHAPES)
        captions = ["" if rng.random() < plan.caption_dropout else s.caption() for s in specs]
        with torch.no_grad():
            dist = vae.encode(to_tensor(images)).latent_dist
            latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)) * sf
        unique = sorted(set(captions))
        index = torch.tensor([unique.index(c) for c in captions])
        hidden = te(bank(unique))[0][index]
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
        noisy = sched.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        snr = ac[t] / (1 - ac[t])
        w = torch.clamp(snr, max=plan.min_snr_gamma) / snr
        loss = ((pred - noise).pow(2).mean(dim=(1, 2, 3)) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(plan.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        losses.append(loss.item())
        st.step(step + 1, loss=float(np.mean(losses[-50:])), lr=f"{lr:.1e}")
        if work.out_of_time() and step + 1 < plan.unet_steps:
            work.save("unet", {"unet": unet.state_dict(), "te": te.state_dict(), "opt": opt.state_dict(),
                               "ema": ema, "rng": rng_state(rng), "gen": gen.get_state(), "step": step + 1,
                               "losses": losses, "seconds": seconds + time.time() - t_start})
            raise Paused(f"unet+text step {step + 1}/{plan.unet_steps}")
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval()
    te.eval()
    return losses, seconds + time.time() - t_start


# ----------------------------------------------------------------------------- saving

def save_pipeline(vae, unet, te, out: Path) -> None:
    """save_pretrained, then the weights to fp16 (loaders cast them back to fp32) and the tokenizer as
    vocab.json + merges.txt like the real SD1.5 repo. Written next to ``out``, then renamed into place."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from safetensors import safe_open
    from safetensors.torch import save_file

    sched_cfg = json.loads((CONFIGS / "sd15" / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    sched = PNDMScheduler.from_config(sched_cfg)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer(), unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    import torch

    for f in sorted(tmp.glob("*/*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            meta = sf.metadata() or {}
            tensors = {k: sf.get_tensor(k) for k in sf.keys()}
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}, str(f), meta)
    te_cfg = tmp / "text_encoder" / "config.json"
    cfg = json.loads(te_cfg.read_text(encoding="utf-8"))
    for key in ("torch_dtype", "dtype"):
        if key in cfg:
            cfg[key] = "float16"
    te_cfg.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(tmp / "tokenizer")
    shutil.copytree(CONFIGS / "clip_tokenizer", tmp / "tokenizer")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- main

README = """# Toy Stable Diffusion 1.5 model (LoRA Workshop)

A tiny SD1.5-architecture pipeline (diffusers layout) trained from scratch on drawn shapes:
{shapes} in {colors}, on {backgrounds} backgrounds, 32x32 px, captioned like
"a red circle on a white background". Built by `{command}` in {minutes:.1f} minutes.
It has never seen a star: that is what the demo LoRA teaches (`python -m core demo`).
Figures: `toy_model.json`; samples: `samples.png`; details: docs/toy-model.md.
"""


def build(out: Path, plan: Plan, echo=print, command: str = "", threads: int = 2,
          max_minutes: float | None = None) -> dict:
    """Build (or continue building) the toy model into ``out``. Raises :class:`Paused` when
    ``max_minutes`` runs out; the same call then continues where it stopped."""
    import torch

    setup_torch(threads)
    progress = Progress(echo)
    t0 = time.time()
    key = json.dumps({"v": BUILD_VERSION, **asdict(plan)}, sort_keys=True)
    work = Work(out, key, t0 + 60 * max_minutes if max_minutes else None)
    progress.say(f"Building the toy model into {out}: {json.dumps(asdict(plan))}")
    vae, unet, te = make_models(plan.seed)
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in (("unet", unet), ("vae", vae), ("text_encoder", te))}
    progress.say("Parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    done = work.load("vae_done")
    if done:
        vae.load_state_dict(done["model"])
        vae_losses, vae_s, sf = list(done["losses"]), float(done["seconds"]), float(done["scaling_factor"])
        progress.say("vae: already trained (kept from the interrupted build)")
    elif plan.vae_from:
        from diffusers import AutoencoderKL

        src = AutoencoderKL.from_pretrained(Path(plan.vae_from) / "vae", dtype=torch.float32)
        vae.load_state_dict(src.state_dict())
        vae_losses, vae_s, sf = [float("nan")], 0.0, float(src.config.scaling_factor)
        progress.say(f"vae: taken from {plan.vae_from}")
    else:
        vae_losses, vae_s = train_vae(vae, plan, progress, work)
        sf = latent_scale(vae, plan.seed)
        work.save("vae_done", {"model": vae.state_dict(), "losses": vae_losses, "seconds": vae_s,
                               "scaling_factor": sf})
    vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=sf)
    progress.say(f"VAE: {vae_s / 60:.1f} min of training; latent scaling_factor {sf}")
    unet_losses, unet_s = train_unet(vae, unet, te, plan, progress, work)
    progress.say(f"UNet + text encoder: {unet_s / 60:.1f} min of training")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_pipeline(vae, unet, te, out)
    progress.say(f"Saved {out} ({folder_size(out) / 1e6:.1f} MB); measuring")
    t = time.time()
    figures = measure(out, plan.seed, plan.eval_seeds, progress)
    measure_s = time.time() - t
    import diffusers
    import transformers

    train_s = vae_s + unet_s
    info = {
        "build_version": BUILD_VERSION,
        "command": command,
        "plan": asdict(plan),
        "seconds": {"vae": round(vae_s), "unet_text": round(unet_s), "training": round(train_s),
                    "measuring": round(measure_s), "this_session": round(time.time() - t0)},
        "losses": {"vae_last50": round(float(np.mean(vae_losses[-50:])), 5),
                   "unet_last50": round(float(np.mean(unet_losses[-50:])), 5)},
        "parameters": counts,
        "latent_scaling_factor": sf,
        "folder_mb": round(folder_size(out) / 1e6, 2),
        "dataset": {"size": S.SIZE, "base_shapes": list(S.BASE_SHAPES), "vae_shapes": list(S.ALL_SHAPES),
                    "colors": list(S.COLORS), "backgrounds": list(S.BACKGROUNDS)},
        **figures,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                    "cpu_threads": threads, "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    (out / "toy_model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(README.format(
        shapes=", ".join(S.BASE_SHAPES), colors=", ".join(S.COLORS), backgrounds=", ".join(S.BACKGROUNDS),
        command=command, minutes=(train_s + measure_s) / 60), encoding="utf-8")
    work.remove()
    progress.say(f"Done: {out} ({(train_s + measure_s) / 60:.1f} min of training and measuring)")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.toy.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/toy-sd15", help="Output folder (replaced when the build ends).")
    ap.add_argument("--quick", action="store_true", help="A 2-3 minute smoke-test build (poor quality).")
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--unet-steps", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--vae-from", metavar="FOLDER", help="Take the VAE from an existing toy model (skips stage 1).")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (results depend on it; the shipped model used 2).")
    ap.add_argument("--max-minutes", type=float,
                    help="Pause after this many minutes (state kept in <out>.work/); the same command continues.")
    args = ap.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    for k in ("vae_steps", "unet_steps", "seed", "vae_from"):
        if getattr(args, k) is not None:
            setattr(plan, k, getattr(args, k))
    shown = [a for a in (argv if argv is not None else sys.argv[1:])]
    command = " ".join(["python -m core.toy.build", *shown])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # OpenMP threads spin a long time while they wait (300000 turns by default): on a busy machine that makes
    # 2 threads 3-10x slower than 1. A short spin keeps the idle-machine speed. Set before torch is imported.
    os.environ.setdefault("GOMP_SPINCOUNT", "20000")
    from ..train.process import quiet_libraries

    quiet_libraries()
    try:
        build(Path(args.out), plan, echo=lambda m: print(m, flush=True), command=command, threads=args.threads,
              max_minutes=args.max_minutes)
    except Paused as e:
        print(f"Paused at {e} (--max-minutes); run the same command again to continue.", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
