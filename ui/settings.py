"""The GUI's own settings (folders, Hugging Face token), kept in settings.json, readable by the user only.

The token is never logged and never sent back to the browser: the GUI only says whether it is set.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = PROJECT_ROOT / "settings.json"


@dataclass
class Settings:
    models_dir: str = str(PROJECT_ROOT / "models")
    loras_dir: str = str(PROJECT_ROOT / "outputs")
    outputs_dir: str = str(PROJECT_ROOT / "outputs")
    datasets_dir: str = str(PROJECT_ROOT / "datasets")  # uploads and prepared training folders (Dataset tab)
    model_folders: str = ""  # more folders of models (a ComfyUI or A1111/Forge models folder), one per line
    hf_token: str = ""
    path: str = str(DEFAULT_PATH)

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return (f"Settings(models_dir={self.models_dir!r}, loras_dir={self.loras_dir!r}, "
                f"outputs_dir={self.outputs_dir!r}, hf_token={self.token_state!r})")

    def model_dirs(self) -> list[str]:
        """The models folder and the other model folders, in that order."""
        more = [line.strip() for line in self.model_folders.splitlines() if line.strip()]
        return [self.models_dir, *(m for m in more if m != self.models_dir)]

    @property
    def token_state(self) -> str:
        return "set" if self.hf_token else "not set"

    def trainer_env(self) -> dict[str, str]:
        """Environment for the trainer subprocess: the token for gated Hugging Face models."""
        return {"HF_TOKEN": self.hf_token} if self.hf_token else {}

    def save(self) -> None:
        """Write atomically with permissions 600 (the file holds the token)."""
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        fd, tmp = tempfile.mkstemp(prefix=".settings.", suffix=".tmp", dir=p.parent)  # created 600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Settings from ``path`` (default: settings.json in the project folder); defaults where absent.

    A file readable by others is tightened to 600 on the way.
    """
    p = Path(path) if path else DEFAULT_PATH
    s = Settings(path=str(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return s
    if not isinstance(data, dict):
        return s
    for f in fields(Settings):
        if f.name != "path" and isinstance(data.get(f.name), str):
            setattr(s, f.name, data[f.name])
    if os.name != "nt":
        try:
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except OSError:
            pass
    return s
