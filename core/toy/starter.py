"""What a fresh install trains on: the shipped toy model and the demo dataset, with the Demo (CPU) preset.

The GUI's Training tab starts from :func:`starter_config` when the models folder holds no model of the
user's own, so that pressing Start on a fresh install trains a LoRA whose samples visibly show the
concept (stars) within a couple of minutes on a CPU.
"""
from __future__ import annotations

from pathlib import Path

TOY_MODEL = Path(__file__).resolve().parents[2] / "models" / "toy-sd15"
DEMO_PRESET = "Demo (CPU)"
DEMO_DATASET_FOLDER = "demo-dataset"
STARTER_OUTPUT_NAME = "my_first_lora"


def toy_model_available(path: Path = TOY_MODEL) -> bool:
    return (path / "model_index.json").is_file()


def ensure_demo_dataset(outputs_dir: str | Path) -> Path:
    """``<outputs_dir>/demo-dataset`` (kohya layout ``10_zqx/``), written if it is not complete yet."""
    from .demo_data import N_IMAGES, REPEATS, TRIGGER, write_demo_dataset

    root = Path(outputs_dir).expanduser() / DEMO_DATASET_FOLDER
    folder = root / f"{REPEATS}_{TRIGGER}"
    if len(list(folder.glob("*.png"))) < N_IMAGES or len(list(folder.glob("*.txt"))) < N_IMAGES:
        write_demo_dataset(root)
    return root


def demo_values(model: str | Path, train_data_dir: str | Path, output_dir: str | Path, output_name: str) -> dict:
    """The demo's training values: the Demo (CPU) preset with the model, data, output and trigger word filled in
    (the same for the GUI's starting form and `python -m core demo`). KeyError when the preset is missing."""
    from ..config.presets import find_preset
    from .demo_data import TRIGGER

    return {**find_preset(DEMO_PRESET).values, "pretrained_model_name_or_path": str(model),
            "train_data_dir": str(train_data_dir), "output_dir": str(output_dir), "output_name": output_name,
            "trigger_word": TRIGGER}


def starter_config(outputs_dir: str | Path):
    """A complete, valid TrainConfig for the demo (toy model + demo dataset + Demo preset), or None when the
    toy model is not installed."""
    from ..config.toml_io import validate

    if not toy_model_available():
        return None
    outputs = Path(outputs_dir).expanduser()
    return validate(demo_values(TOY_MODEL, ensure_demo_dataset(outputs), outputs, STARTER_OUTPUT_NAME))
