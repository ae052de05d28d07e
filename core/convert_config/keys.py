"""Source keys by how they are handled: by a dedicated step, as settings of no use here, as defaults."""
from __future__ import annotations

from typing import Any

# Fields handled by a dedicated step, never copied as they are.
SPECIAL = {"learning_rate", "unet_lr", "text_encoder_lr", "network_train_unet_only", "network_train_text_encoder_only",
           "optimizer_type", "optimizer_args", "max_train_epochs", "max_train_steps", "lr_warmup_steps",
           "lr_scheduler", "sample_prompts", "sample_sampler", "sdpa", "conv_dim", "conv_alpha", "use_dora",
           "mixed_precision", "save_precision", "model_family", "v_parameterization"}
# Flux.1 fields: taken only by the Flux step (flux.py), and only for a Flux config; for other configs the GUI's
# always-written Flux fields stay ignored (see FLUX_SD3 below).
FLUX_FIELDS = ("clip_l", "t5xxl", "ae", "timestep_sampling", "sigmoid_scale", "discrete_flow_shift",
               "model_prediction_type", "guidance_scale", "t5xxl_max_token_length", "flux_lora_layers")
SPECIAL |= set(FLUX_FIELDS) | {"masked_loss", "alpha_mask", "conditioning_data_dir"}  # masks.py
# Keys copied as they are, under another name.
DIRECT_RENAMES = {"max_resolution": "resolution"}

# Settings about processes, logging and uploads: nothing to convert, listed in one line.
RUNTIME = {
    "max_data_loader_n_workers", "persistent_data_loader_workers", "num_cpu_threads_per_process", "num_processes",
    "num_machines", "multi_gpu", "gpu_ids", "main_process_port", "dynamo_backend", "dynamo_mode",
    "dynamo_use_fullgraph", "dynamo_use_dynamic", "extra_accelerate_launch_args", "vae_batch_size", "lowram",
    "lowvram", "highvram", "logging_dir", "log_with", "log_prefix", "log_tracker_name", "log_tracker_config",
    "log_config", "use_wandb", "wandb_api_key", "wandb_run_name", "huggingface_repo_id", "huggingface_token",
    "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_path_in_repo", "save_state_to_huggingface",
    "resume_from_huggingface", "async_upload", "skip_cache_check", "model_list", "save_as_bool", "training_preset",
    "file_path", "api_name", "console_log_level", "console_log_file", "console_log_simple", "ddp_timeout",
    "ddp_gradient_as_bucket_view", "ddp_static_graph", "deepspeed", "zero_stage", "output_config", "config_file",
    "tokenizer_cache_dir", "disable_mmap_load_safetensors", "show_timesteps", "mem_eff_save",
}
# Flux.1 / SD3 settings of newer kohya_ss versions (always written, used only with those models).
FLUX_SD3 = {
    "ae", "clip_l", "clip_g", "t5xxl", "t5xxl_device", "t5xxl_dtype", "t5xxl_max_token_length", "t5xxl_lr",
    "apply_t5_attn_mask", "split_mode", "split_qkv", "train_t5xxl", "enable_all_linear", "guidance_scale",
    "discrete_flow_shift", "model_prediction_type", "timestep_sampling", "train_blocks", "blocks_to_swap",
    "single_blocks_to_swap", "double_blocks_to_swap", "img_attn_dim", "img_mlp_dim", "img_mod_dim", "single_dim",
    "txt_attn_dim", "txt_mlp_dim", "txt_mod_dim", "single_mod_dim", "in_dims", "train_double_block_indices",
    "train_single_block_indices", "clip_g_dropout_rate", "logit_mean", "logit_std", "mode_scale",
    "pos_emb_random_crop_rate", "save_clip", "save_t5xxl", "weighting_scheme", "cpu_offload_checkpointing",
    "fp8_base_unet", "sigmoid_scale", "model_type", "blockwise_fused_optimizers", "flux_fused_backward_pass",
}
FLUX_SD3_PREFIXES = ("flux1_", "sd3_")
# LyCORIS-only GUI fields (written for every LoRA_type).
LYCORIS_KEYS = ("LyCORIS_preset", "factor", "use_cp", "use_tucker", "use_scalar", "rank_dropout_scale", "constrain",
                "rescaled", "train_norm", "decompose_both", "train_on_input", "unit", "bypass_mode")  # ordered: stable reports
# Values the GUI writes by default; equal to these, the key is noise. Not so the Flux ones (timestep_sampling ...
# t5xxl_max_token_length) in a Flux config: they are sd-scripts' argparse defaults, so they are the run's real
# settings, and the Flux step (flux.py) converts them before the leftovers step sees them.
GUI_DEFAULTS: dict[str, Any] = {
    "max_token_length": 75, "noise_offset_type": "Original", "save_model_as": "safetensors", "LyCORIS_preset": "full",
    "factor": -1, "unit": 1, "train_on_input": True, "max_timestep": 1000, "min_timestep": 0, "loss_type": "l2",
    "huber_schedule": "snr", "huber_c": 0.1, "huber_scale": 1, "dynamo_backend": "no", "dynamo_mode": "default",
    "num_processes": 1, "num_machines": 1, "num_cpu_threads_per_process": 2, "training_preset": "none",
    "t5xxl_dtype": "bf16", "logit_std": 1, "mode_scale": 1.29, "weighting_scheme": "logit_normal",
    "train_blocks": "all", "train_double_block_indices": "all", "train_single_block_indices": "all",
    "timestep_sampling": "sigma", "model_prediction_type": "sigma_scaled", "discrete_flow_shift": 3,
    "guidance_scale": 3.5, "t5xxl_max_token_length": 512, "sd3_text_encoder_batch_size": 1, "ggpo_sigma": 0.03,
    "ggpo_beta": 0.01, "model_list": "custom", "lr_scheduler_type": "",
}

# sd-scripts' own defaults where they differ from ours (used when an sd-scripts TOML leaves the key out).
SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "network_dim": 4, "network_alpha": 1.0, "learning_rate": 2e-6, "caption_extension": ".caption",
    "enable_bucket": False, "sample_every_n_epochs": 0, "sample_sampler": "ddim",
}
# sd-scripts' argparse defaults of the Flux options (flux_train_utils.add_flux_train_arguments); ours differ, so a
# Flux config that leaves them out gets them written explicitly. t5xxl_max_token_length None (the model's own:
# 512 for dev, 256 for schnell) is our 0.
SD_SCRIPTS_FLUX_DEFAULTS: dict[str, Any] = {
    "timestep_sampling": "sigma", "sigmoid_scale": 1.0, "model_prediction_type": "sigma_scaled",
    "discrete_flow_shift": 3.0, "guidance_scale": 3.5, "t5xxl_max_token_length": 0,
}
# The kohya_ss GUI's Flux defaults (class_flux1.py): sd-scripts' own, except that the GUI always passes
# t5xxl_max_token_length (512 by default). A GUI config without one of these keys loads with this value.
GUI_FLUX_DEFAULTS: dict[str, Any] = {**SD_SCRIPTS_FLUX_DEFAULTS, "t5xxl_max_token_length": 512}
# Low-VRAM options of sd-scripts' / kohya_ss's Flux training.
FLUX_LOW_VRAM = ("fp8_base", "fp8_base_unet", "blocks_to_swap", "single_blocks_to_swap", "double_blocks_to_swap",
                 "cpu_offload_checkpointing", "split_mode", "blockwise_fused_optimizers", "fused_backward_pass",
                 "flux_fused_backward_pass")
# lora_flux network_args (and the GUI fields kohya_ss turns into them) for ranks of single parts.
FLUX_PART_DIMS = ("img_attn_dim", "img_mlp_dim", "img_mod_dim", "single_dim", "txt_attn_dim", "txt_mlp_dim",
                  "txt_mod_dim", "single_mod_dim")
# argparse options of sd-scripts that take several values.
LIST_OPTIONS = {"network_args", "optimizer_args", "lr_scheduler_args", "text_encoder_lr"}
# Keys a dataset_config file may set for the whole dataset, in sd-scripts names.
DATASET_KEYS = {"resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                "bucket_no_upscale", "caption_extension", "shuffle_caption", "keep_tokens", "flip_aug",
                "caption_dropout_rate", "color_aug", "random_crop", "caption_prefix", "caption_suffix",
                "caption_dropout_every_n_epochs", "caption_tag_dropout_rate", "face_crop_aug_range",
                "token_warmup_min", "token_warmup_step", "keep_tokens_separator", "alpha_mask", "conditioning_data_dir"}
