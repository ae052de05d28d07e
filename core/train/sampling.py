"""Sample images during training, from kohya-syntax prompt lines, with fixed seeds."""
from __future__ import annotations

from pathlib import Path

import torch

from ..generation.samplers import a1111_parameters, parse_prompt_line, save_png


@torch.no_grad()
def make_samples(comps, cfg, out_dir: Path, step: int, device: torch.device, dtype: torch.dtype) -> tuple[list[str], list[str]]:
    """Render every sample prompt with the LoRA as it is now; return (paths, prompts)."""
    pipe = comps.pipeline
    fam = comps.family
    w0, h0 = cfg.resolution_wh
    old_scheduler = pipe.scheduler
    vae_device = comps.vae.device
    modules = [m for m in (comps.denoiser, *comps.text_encoders) if m is not None]
    was_training = [m.training for m in modules]
    devices = [next(m.parameters()).device for m in modules]  # cached-away text encoders wait on the CPU
    paths, prompts = [], []
    mult = fam.size_multiple
    try:
        pipe.scheduler = fam.sample_scheduler(cfg.sample_sampler, old_scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        comps.vae.to(device)
        for m in modules:
            if not hasattr(m, "_block_swapper"):  # swapped blocks stay in RAM: the swap hooks bring them in
                m.to(device)
            m.eval()
        for i, line in enumerate(cfg.sample_prompts):
            spec = parse_prompt_line(line)
            w = max(mult, (spec.width or w0) // mult * mult)
            h = max(mult, (spec.height or h0) // mult * mult)
            seed = spec.seed if spec.seed is not None else cfg.seed + i
            gen = torch.Generator(device="cpu").manual_seed(seed)
            call = fam.sample_call(spec, cfg, comps)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                image = pipe(width=w, height=h, generator=gen, output_type="pil", **call).images[0]
            shown_cfg = call.get("guidance_scale", spec.cfg)
            sampler = cfg.sample_sampler if fam.uses_cfg else "euler"
            params = a1111_parameters(spec.prompt, spec.negative if fam.uses_cfg else "", call["num_inference_steps"],
                                      sampler, shown_cfg, seed, w, h, model=cfg.pretrained_model_name_or_path)
            if not fam.uses_cfg and "guidance_scale" in call:
                params = params.replace("CFG scale:", "Distilled CFG Scale:", 1)
            params += f"\nLoRA: {cfg.output_name}, step {step}"
            paths.append(str(save_png(image, out_dir / f"s{step:06d}_{i:02d}.png", params)))
            prompts.append(spec.prompt)
    finally:
        pipe.scheduler = old_scheduler
        comps.vae.to(vae_device)
        for m, t, d in zip(modules, was_training, devices):
            m.train(t)
            if not hasattr(m, "_block_swapper"):
                m.to(d)
    return paths, prompts
