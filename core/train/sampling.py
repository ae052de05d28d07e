"""Sample images during training, from kohya-syntax prompt lines, with fixed seeds."""
from __future__ import annotations

from pathlib import Path

import torch

from ..generation.samplers import a1111_parameters, make_scheduler, parse_prompt_line


@torch.no_grad()
def make_samples(comps, cfg, out_dir: Path, step: int, device: torch.device, dtype: torch.dtype) -> tuple[list[str], list[str]]:
    """Render every sample prompt with the LoRA as it is now; return (paths, prompts)."""
    pipe = comps.pipeline
    fam = comps.family
    w0, h0 = cfg.resolution_wh
    old_scheduler = pipe.scheduler
    vae_device = comps.vae.device
    modules = [comps.unet, *comps.text_encoders]
    was_training = [m.training for m in modules]
    paths, prompts = [], []
    try:
        pipe.scheduler = make_scheduler(cfg.sample_sampler, old_scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        comps.vae.to(device)
        for m in modules:
            m.eval()
        for i, line in enumerate(cfg.sample_prompts):
            spec = parse_prompt_line(line)
            w = (spec.width or w0) // 8 * 8
            h = (spec.height or h0) // 8 * 8
            seed = spec.seed if spec.seed is not None else cfg.seed + i
            gen = torch.Generator(device="cpu").manual_seed(seed)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                image = pipe(prompt=spec.prompt, negative_prompt=spec.negative or None, width=w, height=h,
                             num_inference_steps=spec.steps, guidance_scale=spec.cfg, generator=gen,
                             output_type="pil", **fam.pipeline_kwargs(cfg.clip_skip)).images[0]
            params = a1111_parameters(spec.prompt, spec.negative, spec.steps, cfg.sample_sampler, spec.cfg,
                                      seed, w, h, model=cfg.pretrained_model_name_or_path)
            params += f"\nLoRA: {cfg.output_name}, step {step}"
            from ..generation.samplers import save_png

            paths.append(str(save_png(image, out_dir / f"s{step:06d}_{i:02d}.png", params)))
            prompts.append(spec.prompt)
    finally:
        pipe.scheduler = old_scheduler
        comps.vae.to(vae_device)
        for m, t in zip(modules, was_training):
            m.train(t)
    return paths, prompts
