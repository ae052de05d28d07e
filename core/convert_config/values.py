"""Value mappings: optimizer, scheduler, sampler, precision and LoRA_type names -> ours."""
from __future__ import annotations

from ..generation.samplers import A1111_NAMES
from ..config.fields import literal_choices
from ..config.schema import TrainConfig

# ------------------------------------------------------------------ optimizers
OPTIMIZERS = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "lion": "Lion", "lion8bit": "Lion8bit",
              "prodigy": "Prodigy", "adafactor": "Adafactor", "sgd": "SGD"}
# sd-scripts name (lower case) -> (ours, extra optimizer_args, note)
OPTIMIZER_NEAR: dict[str, tuple[str, list[str], str]] = {
    "pagedadamw8bit": ("AdamW8bit", ["is_paged=True"], "the same bitsandbytes optimizer with is_paged=True"),
    "pagedlion8bit": ("Lion8bit", ["is_paged=True"], "the same bitsandbytes optimizer with is_paged=True"),
    "pagedadamw": ("AdamW", [], "nearest available: plain AdamW (not paged)"),
    "pagedadamw32bit": ("AdamW", [], "nearest available: plain AdamW (not paged)"),
    "sgdnesterov": ("SGD", ["nesterov=True"], "SGD with nesterov=True, as sd-scripts does"),
    "sgdnesterov8bit": ("SGD", ["nesterov=True"], "nearest available: SGD with nesterov=True (not 8-bit)"),
    "adamwschedulefree": ("AdamW", [], "nearest available: AdamW (not schedule-free)"),
    "prodigyplusschedulefree": ("Prodigy", [], "nearest available: Prodigy (not schedule-free)"),
}
for _n in ("dadaptation", "dadaptadam", "dadaptadampreprint", "dadaptadagrad", "dadaptadan", "dadaptadanip",
           "dadaptlion", "dadaptsgd"):
    OPTIMIZER_NEAR[_n] = ("Prodigy", [], "nearest available: Prodigy, which like D-Adaptation finds the step size "
                                         "itself; keep learning_rate near 1.0")
# Arguments each optimizer accepts, used only when the optimizer is replaced by a different one.
PRODIGY_ARGS = {"betas", "beta3", "eps", "weight_decay", "decouple", "use_bias_correction", "safeguard_warmup",
                "d0", "d_coef", "growth_rate", "fsdp_in_use", "slice_p"}
ADAMW_ARGS = {"betas", "eps", "weight_decay", "amsgrad"}

# ------------------------------------------------------------------ schedulers, samplers, precision, LoRA_type
SCHEDULERS = set(literal_choices(TrainConfig.model_fields["lr_scheduler"].annotation) or [])
SCHEDULER_NEAR = {"cosine_with_min_lr": "cosine", "warmup_stable_decay": "constant_with_warmup"}

SAMPLERS = list(literal_choices(TrainConfig.model_fields["sample_sampler"].annotation) or [])
# name -> (ours, why); names already ours map to themselves without a note.
SAMPLER_NEAR: dict[str, tuple[str, str]] = {
    "k_euler": ("euler", "the same sampler"),
    "k_euler_a": ("euler_a", "the same sampler"),
    "k_lms": ("lms", "the same sampler"),
    "plms": ("pndm", "the same sampler"),
    "dpmsolver": ("dpmsolver++", "nearest available: the multistep version"),
    "dpmsingle": ("dpmsolver++", "nearest available: the multistep version"),
    "dpm_2": ("heun", "nearest available: both are second-order samplers"),
    "k_dpm_2": ("heun", "nearest available: both are second-order samplers"),
    "dpm_2_a": ("euler_a", "nearest available: both are ancestral samplers"),
    "k_dpm_2_a": ("euler_a", "nearest available: both are ancestral samplers"),
    "dpm++_2m": ("dpmsolver++", "the same sampler"),
    "dpmpp_2m": ("dpmsolver++", "the same sampler"),
    "dpm++_2m_karras": ("dpm++2m_karras", "the same sampler"),
    "dpmpp_2m_karras": ("dpm++2m_karras", "the same sampler"),
}
for _ours, _a1111 in A1111_NAMES.items():  # A1111 display names ("Euler a", "DPM++ 2M Karras") as well
    SAMPLER_NEAR.setdefault(_a1111.lower(), (_ours, "the same sampler"))

# mixed_precision / save_precision spellings -> ours; anything else is kept (lower case) for validation to check.
MIXED_PRECISION_NAMES = {"fp32": "no", "float": "no", "none": "no", "float32": "no"}
SAVE_PRECISION_NAMES = {"fp32": "float", "float32": "float"}

# GUI LoRA_type values trained as kohya-style LoCon (conv_dim / conv_alpha).
LYCORIS_LOCON_TYPES = {"LoCon", "LyCORIS/LoCon"}
