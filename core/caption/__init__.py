"""Auto-captioning: write a caption file next to every image of a folder.

- ``base``: the ``Captioner`` interface (load / caption / unload), ``Option``, the backend registry,
  model folders (hub id or local folder), device choice
- one module per backend: ``blip``, ``clip_interrogator``, ``wd14``, ``florence2``
- ``run``: ``caption_folder`` (skip / overwrite / append, prefix, progress with ETA, cancel, summary)
- ``cli``: ``python -m core caption``

Importing this package imports no ML library; the backends import theirs in ``load()``.
"""
from .base import BACKENDS, CaptionError, Captioner, Option, backends, get_backend
from .run import EXISTING, FileResult, Progress, Summary, caption_folder

__all__ = ["BACKENDS", "CaptionError", "Captioner", "EXISTING", "FileResult", "Option", "Progress", "Summary",
           "backends", "caption_folder", "get_backend"]
