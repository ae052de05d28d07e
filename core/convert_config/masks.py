"""sd-scripts' masked loss -> ours: masked_loss, alpha_mask and the mask folder conditioning_data_dir.

sd-scripts (train_network.py, custom_train_functions.apply_masked_loss) masks the loss when masked_loss is on or
alpha masks were loaded (alpha_mask alone masks too); the masks are a DreamBooth subset's conditioning_data_dir
images when it has one, else the alpha channel. kohya_ss's GUI writes masked_loss; alpha_mask and
conditioning_data_dir come from a dataset config (per subset) or additional_parameters.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .coerce import blank
from .report import fmt

if TYPE_CHECKING:
    from .converter import Converter

KEYS = ("masked_loss", "alpha_mask", "conditioning_data_dir")


def subset_masks(subsets: list[dict[str, Any]], merged: dict[str, Any]) -> str | None:
    """Several subsets: their masks as one setting of ours when they agree (alpha_mask on every training subset;
    conditioning_data_dir folders named like their image_dir folders, side by side: their parent folder, the
    '<mask folder>/<concept folder>/' layout). Sets them in `merged`; returns a note when they do not agree."""
    train = [s for s in subsets if not s.get("is_reg")]
    if len(train) < 2:
        return None
    alphas = {bool(s.get("alpha_mask", merged.get("alpha_mask", False))) for s in train}
    if alphas == {True}:
        merged["alpha_mask"] = True
    dirs = [s.get("conditioning_data_dir") or merged.get("conditioning_data_dir") for s in train]
    if not any(dirs):
        return None
    parents = {str(Path(d).parent) for d in dirs if d}
    named = all(d and Path(d).name == Path(str(s.get("image_dir", ""))).name for d, s in zip(dirs, train))
    if len(parents) == 1 and named:
        merged["conditioning_data_dir"] = parents.pop()
        return None
    merged.pop("conditioning_data_dir", None)
    merged.pop("alpha_mask", None)  # sd-scripts uses the folders' masks before the alpha channel
    return ("the subsets' conditioning_data_dir folders are not one mask folder with a sub-folder per image_dir "
            "(named like it), so the masks were not converted: put them into <mask folder>/<concept folder>/ and set "
            "conditioning_data_dir")


def step_masks(cv: Converter) -> None:
    masked = cv.flag("masked_loss") if cv.has("masked_loss") else False
    alpha = cv.flag("alpha_mask") if cv.has("alpha_mask") else False
    folder = cv.take("conditioning_data_dir")
    if blank(folder):
        cv.ignore("conditioning_data_dir")
        folder = None
    if folder is not None:
        cv.put("conditioning_data_dir", str(folder).strip(), "conditioning_data_dir")
        if alpha:  # apply_masked_loss takes the conditioning images first
            cv.unmapped("alpha_mask", True, "sd-scripts uses the conditioning_data_dir masks when both are given, "
                                            "so the alpha channel is not used")
            alpha = False
    if alpha:
        cv.put("alpha_mask", True, "alpha_mask")
        cv.put("masked_loss", True, "alpha_mask")
        if not masked:
            cv.note("alpha_mask = true -> masked_loss = true (sd-scripts masks the loss with loaded alpha masks "
                    "even without masked_loss)")
        else:
            cv.used.add("masked_loss")
        return
    if not alpha and cv.has("alpha_mask") and "alpha_mask" not in cv.c.unmapped:
        cv.ignore("alpha_mask")
    if masked and folder is not None:
        cv.put("masked_loss", True, "masked_loss")
    elif masked:
        cv.unmapped("masked_loss", True,
                    "no masks are given (sd-scripts reads them from a dataset config's conditioning_data_dir or "
                    "alpha_mask and, with neither, trains unmasked): set conditioning_data_dir to a folder of mask "
                    "images or alpha_mask = true, then masked_loss = true")
    elif cv.has("masked_loss"):
        cv.ignore("masked_loss")
    if folder is not None and not masked:
        cv.note(f"conditioning_data_dir = {fmt('x', folder)} without masked_loss: the masks are not used "
                "(as in sd-scripts)")
