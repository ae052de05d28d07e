"""Tiny random-weight Stable Diffusion models and datasets for tests.

The models keep the real block layout of each family (so key names, LoRA targets and
single-file conversion behave as on the real thing) with tiny channel counts, the real
CLIP tokenizer shipped in ``core/models/configs`` and real scheduler configs. Weights are
seeded, so a build is deterministic.

Building takes a few seconds, so builds are cached under ``tests/.cache/<VERSION>``
(gitignored) and shared by every test and process. Callers that pass ``path`` get
their own copy; callers that pass nothing get the shared cache folder and must not
modify it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "core" / "models" / "configs"
CACHE_ROOT = Path(os.environ.get("LORA_WORKSHOP_TEST_CACHE", Path(__file__).resolve().parent / ".cache"))
# Bump when the architecture or weights of the tiny models change.
VERSION = "tiny-v2"

SEED = 1234
SCHEDULER_BASE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}


# ----------------------------------------------------------------------------- components


def _clip_text_config(hidden_act: str, hidden_size: int = 32, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        projection_dim=projection_dim,
        layer_norm_eps=1e-5,
        # Same ids as the real SD configs: eos_token_id=2 selects the pooled token by argmax
        # of the input ids (= <|endoftext|>, the highest id), like the original CLIP.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def _tiny_vae(scaling_factor: float):
    from diffusers import AutoencoderKL

    # Four blocks -> 8x downsampling, as in the real VAE (64 px image -> 8x8 latent).
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def _tokenizer(name: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CONFIGS_DIR / name))


def _save(pipe, out: Path, tokenizers: dict[str, str]) -> None:
    """save_pretrained, then ship the tokenizers as vocab.json + merges.txt like the real
    model repos do (transformers 5 would otherwise write only tokenizer.json)."""
    pipe.save_pretrained(str(out), safe_serialization=True)
    for subfolder, shipped in tokenizers.items():
        shutil.rmtree(out / subfolder)
        shutil.copytree(CONFIGS_DIR / shipped, out / subfolder)


def _build_sd15(out: Path) -> None:
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(SEED + 1)
    vae = _tiny_vae(scaling_factor=0.18215)
    torch.manual_seed(SEED + 2)
    text_encoder = CLIPTextModel(_clip_text_config("quick_gelu"))
    scheduler = PNDMScheduler(**SCHEDULER_BASE, set_alpha_to_one=False, skip_prk_steps=True)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer("clip_tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save(pipe, out, {"tokenizer": "clip_tokenizer"})


def _build_sdxl(out: Path) -> None:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    # TE1 and TE2 widths must differ (768 vs 1280 in the real model): diffusers' single-file
    # loader tells the two text encoders apart by the width of their position embeddings.
    te1_hidden, te2_hidden, te2_proj, time_dim = 32, 48, 40, 8
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=te1_hidden + te2_hidden,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        # 6 micro-conditioning numbers (orig size, crop, target size) + TE2 pooled embedding.
        projection_class_embeddings_input_dim=6 * time_dim + te2_proj,
        norm_num_groups=8,
    )
    torch.manual_seed(SEED + 1)
    vae = _tiny_vae(scaling_factor=0.13025)
    torch.manual_seed(SEED + 2)
    text_encoder = CLIPTextModel(_clip_text_config("quick_gelu"))
    torch.manual_seed(SEED + 3)
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_text_config("gelu", hidden_size=te2_hidden, projection_dim=te2_proj)
    )
    scheduler = EulerDiscreteScheduler(
        **SCHEDULER_BASE,
        interpolation_type="linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_tokenizer("clip_tokenizer"),
        tokenizer_2=_tokenizer("clip_tokenizer_2"),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    _save(pipe, out, {"tokenizer": "clip_tokenizer", "tokenizer_2": "clip_tokenizer_2"})


# ----------------------------------------------------------------------------- caching


def _cache_key() -> str:
    import diffusers
    import transformers

    return f"{VERSION}-diffusers{diffusers.__version__}-transformers{transformers.__version__}"


def _cached(name: str, build) -> Path:
    """Build once into the shared cache (atomic rename, safe across processes)."""
    final = CACHE_ROOT / _cache_key() / name
    if (final / "model_index.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        build(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "model_index.json").is_file():
                raise
            # Another process finished first; use its build.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _materialize(name: str, build, path: str | os.PathLike | None) -> Path:
    cached = _cached(name, build)
    if path is None:
        return cached
    target = Path(path)
    shutil.copytree(cached, target, dirs_exist_ok=True)
    return target


def make_tiny_sd15(path: str | os.PathLike | None = None) -> Path:
    """A tiny SD1.5-layout diffusers pipeline folder. ``path=None``: shared read-only cache."""
    return _materialize("sd15", _build_sd15, path)


def make_tiny_sdxl(path: str | os.PathLike | None = None) -> Path:
    """A tiny SDXL-layout diffusers pipeline folder. ``path=None``: shared read-only cache."""
    return _materialize("sdxl", _build_sdxl, path)


# ----------------------------------------------------------------------------- datasets

DEFAULT_SIZES = [(64, 64), (96, 64), (64, 96), (64, 64)]
_COLORS = [("red", (220, 40, 40)), ("green", (40, 200, 60)), ("blue", (40, 60, 220)), ("yellow", (230, 210, 40))]
_SHAPES = ["square", "circle", "stripes"]


def _draw(width: int, height: int, index: int):
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(SEED + index)
    color_name, color = _COLORS[index % len(_COLORS)]
    shape = _SHAPES[index % len(_SHAPES)]
    background = tuple(int(c) for c in rng.integers(0, 80, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    m = min(width, height)
    x0, y0 = (width - m // 2) // 2, (height - m // 2) // 2
    box = (x0, y0, x0 + m // 2, y0 + m // 2)
    if shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        for x in range(0, width, 8):
            draw.rectangle((x, 0, x + 3, height), fill=color)
    return image, f"a {color_name} {shape}"


def make_tiny_dataset(
    path: str | os.PathLike,
    n: int = 4,
    name: str = "10_zqx",
    sizes: list[tuple[int, int]] | None = None,
) -> Path:
    """Write ``n`` small PNGs with .txt captions into ``path/name`` (kohya ``<repeats>_<token>`` layout).

    ``sizes`` are (width, height), cycled if shorter than ``n``. The caption of each image is
    ``"<token>, a <color> <shape>"``. Returns ``path`` (the train_data_dir).
    """
    root = Path(path)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or DEFAULT_SIZES
    token = name.split("_", 1)[1] if "_" in name else name
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        image, caption = _draw(width, height, i)
        image.save(folder / f"img_{i:03d}.png")
        (folder / f"img_{i:03d}.txt").write_text(f"{token}, {caption}\n", encoding="utf-8")
    return root
