"""What the GUI's tabs share: the settings, the Blocks object, and the output folders in use."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .settings import Settings


@dataclass
class AppContext:
    settings: Settings
    blocks: Any = None  # the gr.Blocks being built / served
    extra_output_dirs: list[str] = field(default_factory=list)
    # Components other tabs may drive ("tabs", "train.train_data_dir", ...), and wiring to do once every tab
    # exists (a tab built early cannot reach a later one's components while it is being built).
    components: dict[str, Any] = field(default_factory=dict)
    after_build: list[Callable[[], None]] = field(default_factory=list)

    def output_dirs(self, *more: str) -> list[str]:
        """Folders whose run folders the history lists: the settings' outputs, plus those used here."""
        dirs: list[str] = []
        for d in [self.settings.outputs_dir, *self.extra_output_dirs, *more]:
            if d and str(d).strip():
                p = str(Path(d).expanduser().resolve())
                if p not in dirs:
                    dirs.append(p)
        return dirs

    def remember_output_dir(self, path: str) -> None:
        p = str(Path(path).expanduser().resolve())
        if p not in self.extra_output_dirs:
            self.extra_output_dirs.append(p)
        self.allow(p)

    def allow(self, path: str | os.PathLike) -> None:
        """Let Gradio serve files below ``path`` (sample images of runs outside the project)."""
        if self.blocks is None:
            return
        p = str(Path(path).expanduser().resolve())
        allowed = self.blocks.allowed_paths
        if not any(p == a or p.startswith(a.rstrip(os.sep) + os.sep) for a in map(str, allowed)):
            allowed.append(p)
