"""Dataset tools: check a folder of images, prepare a kohya-layout copy, edit captions (PIL + numpy only).

- ``inspect``: per-file checks -> ``Report`` (``Problem``: file, kind, message, action, severity)
- ``phash``: perceptual hashes for near-duplicates
- ``prepare``: the kohya-layout copy (``OUT/<repeats>_<name>/``), resize / crop, originals untouched
- ``captions``: caption files, bulk edits, tag counts
- ``cli``: ``python -m core dataset check | prepare | captions``
"""
from .inspect import Problem, Report, check_folder
from .prepare import CROPS, PrepareError, PrepareResult, prepare

__all__ = ["CROPS", "PrepareError", "PrepareResult", "Problem", "Report", "check_folder", "prepare"]
