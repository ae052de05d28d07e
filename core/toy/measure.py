"""Generating with the toy model and measuring it: the VAE's reconstructions and how often images follow
"a <colour> <shape>" prompts (judged by ``core.toy.checker``). Used by the build and by the demo."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from . import shapes as S
from .work import Progress

DEFAULT_GUIDANCE = 4.0
DEFAULT_SAMPLE_STEPS = 20
SAMPLER = "dpmsolver++"


def to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def eval_prompts(seeds: int) -> list[tuple[str, str, str, int]]:
    """(color, shape, background, seed) for every base caption and ``seeds`` seeds."""
    return [(c, s, b, 1000 + k) for k in range(seeds) for s in S.BASE_SHAPES for c in S.COLORS for b in S.BACKGROUNDS]


def generate(pipe, prompts: list[str], seeds: list[int], steps: int = DEFAULT_SAMPLE_STEPS,
             guidance: float = DEFAULT_GUIDANCE, batch: int = 48) -> list[np.ndarray]:
    """uint8 HxWx3 images, one per prompt, each from its own seeded generator."""
    import torch

    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch]]
        with torch.no_grad():
            res = pipe(prompt=prompts[i:i + batch], generator=gens, num_inference_steps=steps,
                       guidance_scale=guidance, height=S.SIZE, width=S.SIZE, output_type="np")
        out += [(im * 255).round().astype(np.uint8) for im in res.images]
    return out


def load_toy(path: str | Path):
    """The toy model through the normal loader, with the sampler the demo uses."""
    from ..models.loading import load_pipeline
    from ..generation.samplers import make_scheduler

    pipe, fam = load_pipeline(str(path))
    pipe.scheduler = make_scheduler(SAMPLER, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure(out: Path, seed: int, eval_seeds: int, progress: Progress) -> dict:
    """Figures of the saved model in ``out`` (and ``out/samples.png``); ``eval_seeds`` 0 measures the VAE only."""
    import torch

    from . import checker

    pipe = load_toy(out)
    # VAE: drawn images -> encode -> decode -> checker, per shape
    rng = np.random.default_rng(seed + 400)
    images, specs = S.batch(rng, 240 if eval_seeds > 0 else 16, ("circle", "square", "triangle", "star"))
    with torch.no_grad():
        rec = to_uint8(pipe.vae.decode(pipe.vae.encode(to_tensor(images)).latent_dist.mean).sample)
    mse = float(((rec.astype(np.float32) - images.astype(np.float32)) / 255.0).__pow__(2).mean())
    verdicts = [checker.classify(im) for im in rec]
    vae_fig = {
        "psnr_db": round(10 * math.log10(1.0 / max(mse, 1e-10)), 2),
        "shape_right": round(sum(v.shape == s.shape for v, s in zip(verdicts, specs)) / len(specs), 3),
        "color_right": round(sum(v.color == s.color for v, s in zip(verdicts, specs)) / len(specs), 3),
        "star_right": round(sum(v.shape == "star" for v, s in zip(verdicts, specs) if s.shape == "star")
                            / max(1, sum(s.shape == "star" for s in specs)), 3),
    }
    progress.say(f"VAE reconstruction: {vae_fig}")
    if eval_seeds <= 0:
        return {"vae": vae_fig, "prompt_following": None}
    # UNet + text encoder: prompt following
    items = eval_prompts(eval_seeds)
    prompts = [S.caption(c, s, b) for c, s, b, _ in items]
    t0 = time.time()
    imgs = generate(pipe, prompts, [k for *_, k in items])
    gen_s = time.time() - t0
    verdicts = [checker.classify(im) for im in imgs]
    per_shape = {}
    for shape in S.BASE_SHAPES:
        sel = [v for v, it in zip(verdicts, items) if it[1] == shape]
        per_shape[shape] = round(sum(v.shape == shape for v in sel) / len(sel), 3)
    follow = {
        "images": len(items), "sampler": SAMPLER, "steps": DEFAULT_SAMPLE_STEPS, "guidance": DEFAULT_GUIDANCE,
        "color_right": round(sum(v.color == it[0] for v, it in zip(verdicts, items)) / len(items), 3),
        "shape_right": round(sum(v.shape == it[1] for v, it in zip(verdicts, items)) / len(items), 3),
        "both_right": round(sum(v.color == it[0] and v.shape == it[1] for v, it in zip(verdicts, items)) / len(items), 3),
        "shape_right_by_shape": per_shape,
        "seconds_per_image": round(gen_s / len(items), 3),
    }
    progress.say(f"Prompt following: {follow}")
    # The demo's trigger word means nothing to the base: how often does it draw a star anyway?
    zq = [S.caption(c, "zqx", b) for c in S.COLORS for b in S.BACKGROUNDS]
    zimgs = generate(pipe, zq, list(range(2000, 2000 + len(zq))))
    follow["star_rate_for_trigger_word"] = round(checker.concept_score(zimgs, "star"), 3)
    save_grid(imgs[: len(S.BASE_SHAPES) * len(S.COLORS) * len(S.BACKGROUNDS)], out / "samples.png",
              cols=len(S.COLORS) * len(S.BACKGROUNDS))
    return {"vae": vae_fig, "prompt_following": follow}


def save_grid(images: list[np.ndarray], path: Path, cols: int, scale: int = 2) -> None:
    from PIL import Image

    rows = math.ceil(len(images) / cols)
    h, w = images[0].shape[:2]
    grid = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(Image.fromarray(im), ((i % cols) * w, (i // cols) * h))
    grid.resize((cols * w * scale, rows * h * scale), Image.Resampling.NEAREST).save(path, optimize=True)
