"""The one declaration of every training parameter.

Each field is declared once with :func:`param`: type, default, range or choices, plain-words
help, group and basic/advanced level. The CLI (``--help``, ``--set``), TOML configs, presets
and the GUI form are all derived from :class:`TrainConfig`. Key names follow kohya's
sd-scripts wherever the concept is the same. A setting that one model family alone has (Flux.1's clip_l,
klein's qwen3 ...) is declared by that family (core/families, `FamilySpec.settings`, with the same
:func:`core.config.params.param`) and added to :class:`TrainConfig` here.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, create_model, field_validator, model_validator

from .. import families
from .family_settings import mark_family_fields, no_lycoris, unused_settings
from .params import param

FAMILY_CHOICES = ("auto", *families.names())


OptimizerName = Literal["AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "Adafactor", "SGD"]
SchedulerName = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]
SamplerName = Literal["euler", "euler_a", "ddim", "dpmsolver++", "dpm++2m_karras", "pndm", "lms", "heun"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---------------------------------------------------------------- model
    pretrained_model_name_or_path: str = param(
        "", group="model", basic=True,
        help="Base model: a diffusers folder, a single-file .safetensors checkpoint, or a Hugging Face "
             "repo id such as stable-diffusion-v1-5/stable-diffusion-v1-5.")
    model_family: Literal[FAMILY_CHOICES] = param(
        "auto", group="model",
        help="Model family. 'auto' detects it from the model files ("
             + ", ".join(f.title for f in families.all_families()) + ").")
    v_parameterization: bool = param(
        False, group="model",
        help="The base model predicts v (SD2.x 768-v models and v-pred finetunes). Leave off for SD1.5 and SDXL.")
    vae: str = param(
        "", group="model",
        help="Optional separate VAE (.safetensors file or diffusers folder) to use instead of the model's own.")
    base_config_dir: str = param(
        "", group="model",
        help="Optional diffusers config folder for a single-file checkpoint whose architecture differs from "
             "the standard one. Normally left empty: the standard configs ship with the program.")
    ae: str = param(
        "", group="model", basic=True,
        help="Flux: the autoencoder file (ae.safetensors; FLUX.2 klein: flux2-vae.safetensors), needed when the base "
             "model file holds only the transformer.")
    clip_skip: int = param(
        1, group="model", ge=1, le=4,
        help="Use the output of the N-th last text-encoder layer (2 is common for anime SD1.5 models).")

    # ----------------------------------------------------------------- flux
    timestep_sampling: Literal["sigma", "uniform", "sigmoid", "shift", "flux_shift", "flux2_shift"] = param(
        "shift", group="flux",
        help="Flux: how noise levels are drawn. shift (recommended by sd-scripts): sigmoid of a normal draw, shifted "
             "towards more noise by discrete_flow_shift; sigmoid: the same without shift; uniform; sigma: the "
             "scheduler's shifted levels; flux_shift: shifted by image size as Flux.1 samples; flux2_shift: shifted "
             "by image size as FLUX.2 samples (recommended for klein).")
    sigmoid_scale: float = param(
        1.0, group="flux", gt=0.0, le=10.0,
        help="Flux: scale of the normal draw for sigmoid/shift/flux_shift sampling (larger = closer to uniform).")
    discrete_flow_shift: float = param(
        3.1582, group="flux", gt=0.0, le=100.0,
        help="Flux: shift for timestep_sampling shift and sigma (3.1582 as sd-scripts' Flux guide recommends).")
    model_prediction_type: Literal["raw", "additive", "sigma_scaled"] = param(
        "raw", group="flux",
        help="Flux: how the transformer output is compared. raw (recommended): as the velocity noise - image; "
             "additive: output + noisy input; sigma_scaled: as an estimate of the clean image.")
    flux_lora_layers: Literal["all", "attention"] = param(
        "all", group="flux",
        help="Flux: 'all' trains every Linear layer of the double and single blocks (attention, feed-forward, "
             "modulation), as sd-scripts (FLUX.2 klein: attention and feed-forward, as musubi-tuner); 'attention' "
             "only the attention projections (smaller file, less capacity).")

    # ----------------------------------------------------------------- data
    train_data_dir: str = param(
        "", group="data", basic=True, own=True,
        help="Folder that holds one sub-folder per concept, named '<repeats>_<name>', e.g. 10_zqx dog.")
    reg_data_dir: str = param(
        "", group="data", own=True,
        help="Optional folder of regularization (class) images, same '<repeats>_<class>' layout.")
    prior_loss_weight: float = param(
        1.0, group="data", ge=0.0, le=10.0, help="Loss weight of regularization images.")
    trigger_word: str = param(
        "", group="data", basic=True, own=True,
        help="Word that calls up what the LoRA learns (e.g. zqx). Prepended to every caption that lacks it.")
    caption_extension: str = param(
        ".txt", group="data", own=True, help="Extension of the caption file next to each image.")
    resolution: str = param(
        "512", group="data", basic=True,
        help="Training resolution: one number (512) or width,height (1024,768). SD1.5: 512, SDXL and Flux: 1024 (Flux also trains well at 512-768).")
    shuffle_caption: bool = param(
        False, group="data", help="Shuffle comma-separated tags in captions each time an image is used.")
    keep_tokens: int = param(
        0, group="data", ge=0, le=32,
        help="Keep the first N comma-separated tags in place when shuffling (e.g. 1 keeps the trigger word first).")
    caption_dropout_rate: float = param(
        0.0, group="data", ge=0.0, le=1.0, help="Fraction of steps trained with an empty caption.")
    flip_aug: bool = param(
        False, group="data",
        help="Randomly mirror images left-right. Do not use for asymmetric subjects (text, logos, one-sided hair).")
    masked_loss: bool = param(
        False, group="data",
        help="Masked loss: learn only the white part of a mask per training image (e.g. the character, not the "
             "background), as sd-scripts' masked_loss. The masks are the images in conditioning_data_dir, or each "
             "image's transparency with alpha_mask. Grey is learned partly; regularization images are learned whole.")
    alpha_mask: bool = param(
        False, group="data",
        help="Use each training image's alpha channel as its mask: transparent parts are left out of the loss "
             "(turns masked loss on, as in sd-scripts). Images without transparency are learned whole; the log "
             "lists them.")
    conditioning_data_dir: str = param(
        "", group="data", own=True,
        help="Mask folder for masked_loss: one black-and-white image per training image with the same file name "
             "(001.png for 001.jpg), in a sub-folder named like its concept folder (masks/10_zqx/001.png) or "
             "directly in it. White = learned, black = left out; the red channel is read. A mask of another size "
             "with the same aspect ratio is resized.")
    enable_bucket: bool = param(
        True, group="data", help="Aspect-ratio bucketing: train each image near its own aspect ratio instead of cropping to a square.")
    min_bucket_reso: int = param(256, group="data", ge=32, le=4096, help="Smallest bucket side in pixels.")
    max_bucket_reso: int = param(1024, group="data", ge=32, le=8192, help="Largest bucket side in pixels.")
    bucket_reso_steps: int = param(64, group="data", ge=8, le=256, help="Bucket sides are multiples of this.")
    bucket_no_upscale: bool = param(
        False, group="data", help="Do not upscale images smaller than the training resolution; give them a smaller bucket.")

    # --------------------------------------------------------------- output
    output_dir: str = param("outputs", group="output", basic=True, own=True,
                            help="Folder for LoRA files and run folders.")
    output_name: str = param(
        "my_lora", group="output", basic=True, own=True, pattern=r"^[^/\\:*?\"<>|]+$",
        help="File name of the LoRA (without extension); the run folder gets the same name.")
    save_precision: Literal["fp16", "bf16", "float"] = param(
        "fp16", group="output", help="Precision of the saved LoRA weights. fp16 is what everyone uses.")
    save_every_n_epochs: int = param(
        0, group="output", ge=0, help="Also save a LoRA every N epochs (0 = only at the end).")
    save_every_n_steps: int = param(
        0, group="output", ge=0, help="Also save a LoRA every N steps (0 = off).")
    save_state_every_n_steps: int = param(
        50, group="output", ge=1,
        help="Save resumable state every N steps, so a crash or kill loses at most N steps.")
    export_diffusers_format: bool = param(
        False, group="output",
        help="Additionally write <name>.diffusers.safetensors in the diffusers/peft key format.")
    training_comment: str = param("", group="output", own=True, help="Free text stored in the LoRA's metadata.")

    # -------------------------------------------------------------- network
    network_type: Literal["lora", "locon", "loha", "lokr"] = param(
        "lora", group="network",
        help="Kind of network. lora: plain LoRA (convolutions too when conv_dim > 0). locon: LoRA on the attention and "
             "the convolution layers (needs conv_dim). loha / lokr: LyCORIS LoHa (Hadamard product of two low-rank "
             "pairs) and LoKr (Kronecker product; see factor), saved with LyCORIS key names that ComfyUI, "
             "AUTOMATIC1111 and Forge load; the diffusers library (and so the Generate tab) does not load them.")
    network_dim: int = param(
        16, group="network", basic=True, ge=1, le=1024,
        help="LoRA rank: capacity of the LoRA. 8-32 for characters, 32-64 for styles. Higher = bigger file.")
    network_alpha: float = param(
        8.0, group="network", basic=True, gt=0.0, le=1024,
        help="LoRA alpha: the change is scaled by alpha/rank. Half the rank is a common choice.")
    network_dropout: float = param(0.0, group="network", ge=0.0, le=0.5, help="Dropout on LoRA layers.")
    rank_dropout: float = param(
        0.0, group="network", ge=0.0, lt=1.0,
        help="While training, drop each rank of each LoRA layer with this probability (0.1-0.3), the rest scaled "
             "up, as sd-scripts' rank_dropout. Samples and the saved file are unaffected. 0 = off.")
    module_dropout: float = param(
        0.0, group="network", ge=0.0, lt=1.0,
        help="While training, skip each whole LoRA layer with this probability per step (0.1-0.3), as sd-scripts' "
             "module_dropout. Samples and the saved file are unaffected. 0 = off.")
    scale_weight_norms: float = param(
        0.0, group="network", ge=0.0, le=100.0,
        help="Max-norm regularisation: after each optimizer step, scale down every LoRA layer whose change "
             "(alpha/rank x up @ down) has a norm above this (1.0 is typical); the log shows how many were scaled. "
             "0 = off.")
    lora_ff: bool = param(
        False, group="network", help="Also train the UNet's feed-forward layers (more capacity, bigger file).")
    lora_proj: bool = param(
        False, group="network", help="Also train the UNet's attention projection in/out layers (proj_in, proj_out).")
    conv_dim: int = param(
        0, group="network", ge=0, le=512,
        help="Rank for the UNet's convolution layers (LoCon style; with network_type loha / lokr they get that kind). "
             "0 = convolutions are not trained.")
    conv_alpha: float = param(1.0, group="network", gt=0.0, le=512, help="Alpha for the convolution layers.")
    factor: int = param(
        -1, group="network", ge=-1, le=1024,
        help="LoKr: split each layer's size into two factors, one of them as close to this number as it divides "
             "(e.g. 8 or 16: smaller factor = smaller file); -1 = near the square root. Only for network_type lokr.")
    decompose_both: bool = param(
        False, group="network",
        help="LoKr: also make the smaller Kronecker factor low-rank (network_dim), not only the larger one. Only for "
             "network_type lokr. A layer whose factors are both full matrices trains at scale 1 (alpha unused), "
             "as LyCORIS and the loaders do.")
    use_tucker: bool = param(
        False, group="network",
        help="LoHa / LoKr: decompose 3x3 convolution kernels with a small Tucker core (hada_t1/t2, lokr_t2; LyCORIS' "
             "use_tucker, formerly use_cp): fewer parameters for the conv_dim layers. Only for loha and lokr.")
    use_dora: bool = param(
        False, group="network",
        help="Use DoRA (weight-decomposed LoRA). The file is exact only where DoRA's own formula is applied (peft); "
             "ComfyUI and Forge apply it approximately (they normalise by the base weight's norm), AUTOMATIC1111 "
             "applies it wrongly and diffusers ignores the DoRA part of SD/SDXL files. Plain LoRA loads the same "
             "everywhere.")
    network_train_unet_only: bool = param(
        False, group="network", basic=True, help="Train only the UNet (Flux: the transformer), not the text encoder(s). Saves memory; usual for SDXL and Flux (whose T5 is never trained).")
    network_train_text_encoder_only: bool = param(
        False, group="network", help="Train only the text encoder(s).")

    # ---------------------------------------------------------------- optim
    learning_rate: float = param(
        1e-4, group="optim", basic=True, gt=0.0, le=10.0,
        help="Base learning rate. 1e-4 is a safe start for AdamW; use 1.0 with Prodigy.")
    unet_lr: Optional[float] = param(None, group="optim", gt=0.0, le=10.0, help="UNet learning rate (default: learning_rate).")
    text_encoder_lr: Optional[float] = param(
        None, group="optim", gt=0.0, le=10.0, help="Text encoder learning rate (default: learning_rate). Often lower, e.g. 5e-5.")
    optimizer_type: OptimizerName = param(
        "AdamW", group="optim", basic=True,
        help="AdamW: reliable. AdamW8bit: less VRAM (needs an NVIDIA GPU). Prodigy: finds the LR itself (set LR 1.0).")
    optimizer_args: list[str] = param(
        [], group="optim", help="Extra optimizer arguments as key=value, e.g. weight_decay=0.01 betas=0.9,0.99.")
    lr_scheduler: SchedulerName = param("constant", group="optim", help="How the learning rate changes over the run.")
    lr_warmup_steps: int = param(0, group="optim", ge=0, help="Steps over which the LR ramps up from 0.")
    lr_scheduler_num_cycles: int = param(1, group="optim", ge=1, help="Restarts for cosine_with_restarts.")
    lr_scheduler_power: float = param(1.0, group="optim", gt=0.0, help="Power for the polynomial scheduler.")
    max_grad_norm: float = param(1.0, group="optim", ge=0.0, help="Clip gradients to this norm (0 = no clipping).")

    # ---------------------------------------------------------------- train
    train_batch_size: int = param(1, group="train", basic=True, ge=1, le=256, help="Images per step.")
    max_train_epochs: int = param(
        10, group="train", basic=True, ge=0, le=100000, help="Number of passes over the dataset (with repeats).")
    max_train_steps: int = param(
        0, group="train", ge=0, help="Stop after this many steps instead (0 = use max_train_epochs).")
    gradient_accumulation_steps: int = param(
        1, group="train", ge=1, le=1024, help="Accumulate gradients over N batches per optimizer step.")
    seed: int = param(42, group="train", basic=True, ge=0, help="Random seed: the same seed and settings give the same LoRA.")

    # ----------------------------------------------------------- validation
    validation_split: float = param(
        0.0, group="validation", basic=True, ge=0.0, le=100000,
        help="Hold images out of training to measure a validation loss and pick the best epoch: a fraction (0.1 = a "
             "tenth, at least one image) or a number of images (2 = two). They are never trained on, and the run "
             "folder lists them (validation.json). 0 = off: with fewer than about 12 images, every image is needed "
             "for training.")
    validation_data_dir: str = param(
        "", group="validation", own=True,
        help="A separate folder of validation images in the '<repeats>_<name>' layout (repeats are ignored), "
             "instead of holding training images out with validation_split.")
    validate_every_n_epochs: int = param(
        1, group="validation", ge=1, le=100000,
        help="Measure the validation loss every N epochs; it is also measured for every saved LoRA file.")
    validation_seed: Optional[int] = param(
        None, group="validation", ge=0,
        help="Seed of the held-out choice and of the fixed validation noise (default: seed).")
    early_stop_patience: int = param(
        0, group="validation", ge=0, le=100000,
        help="Stop the run when the validation loss has not improved for this many evaluations in a row (the best "
             "file is kept and named). 0 = off: the run goes to the end and warns when it is probably overfitting.")

    # -------------------------------------------------------------- quality
    min_snr_gamma: float = param(
        0.0, group="quality", ge=0.0, le=100.0,
        help="Min-SNR loss weighting (5 is typical) for faster, steadier training. 0 = off.")
    noise_offset: float = param(
        0.0, group="quality", ge=0.0, le=1.0,
        help="Noise offset (0.05-0.1) lets the model learn very dark or very bright images. Independent of "
             "multires noise, as in sd-scripts (kohya_ss's noise_offset_type picks one; convert-config keeps that one).")
    noise_offset_random_strength: bool = param(
        False, group="quality",
        help="Scale the noise offset by a random strength between 0 and noise_offset, drawn each step (sd-scripts' "
             "--noise_offset_random_strength).")
    adaptive_noise_scale: float = param(
        0.0, group="quality", ge=-1.0, le=1.0,
        help="Adds adaptive_noise_scale x |mean of each latent channel| to noise_offset, per image (about a tenth of "
             "noise_offset, e.g. 0.00357). Needs noise_offset. 0 = off.")
    multires_noise_iterations: int = param(
        0, group="quality", ge=0, le=64,
        help="Multires (pyramid) noise: add this many layers of lower-resolution noise (6-10 is typical), which "
             "helps with overall brightness and large shapes. 0 = off. Applied after noise_offset when both are on.")
    multires_noise_discount: float = param(
        0.3, group="quality", ge=0.0, le=1.0,
        help="Multires noise: weight of each lower-resolution layer is discount^i (0.1-0.3 is typical). Used only "
             "with multires_noise_iterations.")
    ip_noise_gamma: float = param(
        0.0, group="quality", ge=0.0, le=1.0,
        help="Input perturbation noise (about 0.1): the noisy input gets extra noise of this strength that the "
             "target does not contain, a regulariser against exposure bias. 0 = off.")
    ip_noise_gamma_random_strength: bool = param(
        False, group="quality",
        help="Scale ip_noise_gamma by a random strength between 0 and ip_noise_gamma, drawn each step.")
    debiased_estimation_loss: bool = param(
        False, group="quality",
        help="Debiased estimation: weigh the loss by 1/sqrt(SNR) (v-prediction: 1/(SNR+1)), as sd-scripts. "
             "Combines with min_snr_gamma when both are on.")
    min_timestep: int = param(
        0, group="quality", ge=0, le=1000,
        help="Train only on noise levels (timesteps) from this one up; 0 = from the least noise.")
    max_timestep: int = param(
        1000, group="quality", ge=1, le=1000,
        help="Train only on timesteps below this one; 1000 = up to the most noise. Must be larger than min_timestep.")

    # --------------------------------------------------------------- memory
    mixed_precision: Literal["no", "fp16", "bf16"] = param(
        "fp16", group="memory", basic=True,
        help="Compute precision on GPU. bf16 on RTX 30xx and newer, fp16 otherwise. CPU always uses fp32.")
    gradient_checkpointing: bool = param(
        False, group="memory", help="Trade speed for much less VRAM. Recommended for SDXL on 8-16 GB.")
    cache_latents: bool = param(
        True, group="memory", help="Encode images once before training, then move the VAE off the GPU.")
    cache_latents_to_disk: bool = param(
        False, group="memory", help="Keep cached latents on disk so later runs reuse them.")
    cache_text_encoder_outputs: bool = param(
        True, group="memory",
        help="Encode captions once and free the text encoder(s) from memory (only when they are not trained and "
             "captions do not change; with sample prompts they wait in RAM instead). Flux always does.")
    cache_text_encoder_outputs_to_disk: bool = param(
        False, group="memory",
        help="Keep the cached text-encoder outputs on disk too, so later runs with the same captions reuse them "
             "(Flux always caches them in memory).")
    cache_dir: str = param(
        "", group="memory", own=True, help="Where on-disk caches go (default: <output_dir>/cache).")
    sdpa: bool = param(True, group="memory", help="Use PyTorch's scaled-dot-product attention.")
    base_precision: Literal["auto", "fp8", "nf4"] = param(
        "auto", group="memory",
        help="How the frozen base model (UNet / Flux transformer) is kept. auto: in the mixed_precision dtype. fp8: "
             "stored as float8 and computed in the mixed_precision dtype, about half the VRAM of the weights (kohya's "
             "fp8_base). nf4: 4-bit NF4 through bitsandbytes (QLoRA), about a quarter. The LoRA itself always trains "
             "in full precision and its file is the same. fp8 turns on gradient_checkpointing.")
    blocks_to_swap: int = param(
        0, group="memory", ge=0, le=57,
        help="Keep the frozen weights of the last N blocks in CPU RAM and copy each in for its forward pass: less "
             "VRAM, slower steps, the same LoRA (0 = off). Blocks as sd-scripts counts them: Flux 19 double + 38 single "
             "blocks = 57; SDXL 3 down + 1 mid + 3 up = 7; SD1.5 4 + 1 + 4 = 9. Turns on gradient_checkpointing; "
             "not with base_precision nf4.")

    # --------------------------------------------------------------- sample
    sample_prompts: list[str] = param(
        [], group="sample", basic=True, own=True,
        help="Prompts for sample images, one per line, kohya syntax: 'zqx dog --n blurry --w 512 --h 512 --d 1 --s 20 --l 7'.")
    sample_every_n_steps: int = param(0, group="sample", ge=0, help="Make samples every N steps (0 = off).")
    sample_every_n_epochs: int = param(
        1, group="sample", basic=True, ge=0, help="Make samples every N epochs (0 = off).")
    sample_sampler: SamplerName = param("euler_a", group="sample", help="Sampler used for sample images.")
    sample_at_first: bool = param(False, group="sample", help="Also make samples before training starts.")

    # ------------------------------------------------------------ validators
    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, v: Any) -> str:
        if isinstance(v, (int, float)):
            v = str(int(v))
        if isinstance(v, (list, tuple)):
            v = ",".join(str(int(x)) for x in v)
        parts = [p.strip() for p in str(v).replace("x", ",").split(",") if p.strip()]
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise ValueError("use one number like 512 or width,height like 1024,768")
        nums = [int(p) for p in parts]
        if not all(32 <= n <= 8192 for n in nums):
            raise ValueError("each side must be between 32 and 8192 pixels")
        return ",".join(parts)

    @field_validator("sample_prompts", "optimizer_args", mode="before")
    @classmethod
    def _lines(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            v = v.splitlines()
        return [str(x).strip() for x in (v or []) if str(x).strip() and not str(x).strip().startswith("#")]

    @field_validator("caption_extension")
    @classmethod
    def _ext(cls, v: str) -> str:
        return v if v.startswith(".") else "." + v

    @model_validator(mode="after")
    def _cross(self) -> "TrainConfig":
        if self.network_train_unet_only and self.network_train_text_encoder_only:
            raise ValueError(
                "network_train_unet_only and network_train_text_encoder_only are both on: choose one")
        if 0 < self.t5xxl_max_token_length < 16:
            raise ValueError("t5xxl_max_token_length must be 0 (the model's own) or 16-512")
        if self.min_bucket_reso > self.max_bucket_reso:
            raise ValueError("min_bucket_reso is larger than max_bucket_reso")
        if self.min_timestep >= self.max_timestep:
            raise ValueError(f"min_timestep ({self.min_timestep}) must be smaller than max_timestep "
                             f"({self.max_timestep}); both lie in 0-1000")
        self._check_network_type()
        if self.adaptive_noise_scale and not self.noise_offset:
            raise ValueError("adaptive_noise_scale needs noise_offset: set noise_offset (e.g. 0.0357) or set "
                             "adaptive_noise_scale to 0")
        if self.validation_split >= 1 and self.validation_split != int(self.validation_split):
            raise ValueError(f"validation_split = {self.validation_split:g}: use a fraction below 1 (0.1 = 10% of the "
                             "images) or a whole number of images (2)")
        if self.validation_split and self.validation_data_dir.strip():
            raise ValueError("validation_split and validation_data_dir are both set: the validation images come "
                             "either from the training images (validation_split) or from their own folder; clear one")
        if self.early_stop_patience and not self.validates:
            raise ValueError("early_stop_patience needs a validation loss: set validation_split (e.g. 0.1) or "
                             "validation_data_dir, or set early_stop_patience to 0")
        if self.alpha_mask and self.conditioning_data_dir.strip():
            raise ValueError("alpha_mask and conditioning_data_dir are both set: the masks come either from the "
                             "images' transparency (alpha_mask) or from the mask folder; clear one of them")
        if self.masked_loss and not self.alpha_mask and not self.conditioning_data_dir.strip():
            raise ValueError("masked_loss needs masks: set conditioning_data_dir to your folder of mask images, or turn "
                             "alpha_mask on to use the images' transparency")
        return self

    def _check_network_type(self) -> None:
        kind = self.network_type
        if kind == "locon" and not self.conv_dim:
            raise ValueError("network_type = \"locon\" trains the convolution layers at conv_dim: set conv_dim "
                             "(e.g. 8, with conv_alpha 4) or use network_type = \"lora\"")
        if kind != "lokr" and (self.factor != -1 or self.decompose_both):
            raise ValueError("factor and decompose_both apply to network_type = \"lokr\" only: set network_type "
                             "lokr, or factor -1 and decompose_both false")
        if self.factor == 0:
            raise ValueError("factor = 0: use -1 (near the square root) or a positive number such as 8")
        if kind not in ("loha", "lokr"):
            if self.use_tucker:
                raise ValueError("use_tucker applies to network_type loha or lokr only: turn it off or choose one")
            return
        if self.model_family != "auto" and not families.get(self.model_family).lycoris:
            raise ValueError(no_lycoris(self.model_family))
        refused = [(k, why) for k, on, why in (
            ("use_dora", self.use_dora, "DoRA is trained with network_type lora / locon"),
            ("network_dropout", self.network_dropout, "LyCORIS kinds have no input dropout; use rank_dropout or "
                                                      "module_dropout"),
            ("export_diffusers_format", self.export_diffusers_format, "diffusers has no LoHa / LoKr form"),
            ("base_precision", self.base_precision == "nf4", "peft's LoHa / LoKr layers cannot wrap 4-bit (nf4) "
                                                            "layers; use fp8"),
        ) if on]
        if refused:
            raise ValueError(f"network_type = \"{kind}\" cannot be combined with "
                             + "; ".join(f"{k} ({why})" for k, why in refused))

    # -------------------------------------------------------------- helpers
    @property
    def resolution_wh(self) -> tuple[int, int]:
        parts = [int(p) for p in self.resolution.split(",")]
        return (parts[0], parts[-1])

    @property
    def effective_unet_lr(self) -> float:
        return self.unet_lr if self.unet_lr is not None else self.learning_rate

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.text_encoder_lr if self.text_encoder_lr is not None else self.learning_rate

    @property
    def mask_source(self) -> str | None:
        """Where the loss masks come from: "alpha", "folder", or None (no masked loss)."""
        if self.alpha_mask:
            return "alpha"
        return "folder" if self.masked_loss else None

    @property
    def validates(self) -> bool:
        """A validation loss is measured (held-out images or a validation folder)."""
        return self.validation_split > 0 or bool(self.validation_data_dir.strip())

    @property
    def effective_validation_seed(self) -> int:
        return self.seed if self.validation_seed is None else self.validation_seed

    def unused_by(self, family: str) -> str:
        """The warning for family-only settings changed here that `family` does not use ('' when none)."""
        return unused_settings(self, family)

    @property
    def train_unet(self) -> bool:
        return not self.network_train_text_encoder_only

    @property
    def train_text_encoder(self) -> bool:
        return not self.network_train_unet_only


# the settings a family declares itself (core/families: FamilySpec.settings), after those every family shares
TrainConfig = create_model("TrainConfig", __base__=TrainConfig, __module__=__name__,  # type: ignore[misc]
                           **{name: decl for spec in families.all_families() for name, decl in spec.settings.items()})
mark_family_fields(TrainConfig)
