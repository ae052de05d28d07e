"""Which kind of config a file is (kohya_ss GUI, sd-scripts or ours), and reading it as JSON or TOML."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from ..config.toml_io import ConfigError

KOHYA_GUI = "kohya_ss GUI"
SD_SCRIPTS = "sd-scripts"
OURS = "LoRA Workshop"

# Keys that only the kohya_ss GUI writes: any of them means a GUI config.
GUI_MARKERS = {"LoRA_type", "epoch", "max_resolution", "lr_warmup", "additional_parameters", "model_list",
               "optimizer", "save_as_bool", "training_preset", "sdxl_no_half_vae", "lora_network_weights"}
# Keys that only our own TOML has.
OUR_MARKERS = {"model_family", "trigger_word", "save_state_every_n_steps", "export_diffusers_format", "lora_ff",
               "lora_proj", "use_dora", "base_config_dir", "cache_dir", "flux_lora_layers"}


def detect_kind(keys: set[str]) -> str:
    """The kind of config whose (flattened) keys these are."""
    if keys & GUI_MARKERS:
        return KOHYA_GUI
    if keys & OUR_MARKERS:
        return OURS
    return SD_SCRIPTS


def read_source(path: Path) -> dict[str, Any]:
    """The settings in a .json or .toml file (other names: JSON when it starts with '{'); ConfigError if unreadable."""
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read it: {e}"]) from None
    as_json = path.suffix.lower() == ".json" or (path.suffix.lower() != ".toml" and text.lstrip().startswith("{"))
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}: not valid JSON: {e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a JSON object of settings"])
    return data
