"""Hugging Face hub downloads with a progress bar, and their failures in plain words.

Used by base-model loading (core.models.loading) and the captioning models (core.caption). Imports
no ML library.
"""
from __future__ import annotations

import os
import re
from typing import Callable

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def snapshot(repo_id: str, *, allow_patterns: list[str] | None = None, ignore_patterns: list[str] | None = None,
             progress: Callable[[str], None] | None = None, error: type[Exception] = ValueError,
             advice: str = "") -> str:
    """The local folder of a hub repo: downloaded on first use (with a progress bar), then from the cache.

    Failures become ``error(message)``; the message names the repo and what to do (``advice`` replaces the
    default advice for when the hub cannot be reached).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import enable_progress_bars

    if progress:
        progress(f"Downloading {repo_id} from the Hugging Face hub (or using the local copy)")
    enable_progress_bars()  # the download gets its progress bar even where library bars are off
    try:
        return snapshot_download(repo_id, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
                                 local_files_only=is_offline())
    except GatedRepoError:
        raise error(
            f"{repo_id} is a gated model: accept its licence on huggingface.co/{repo_id} with your account, then "
            "set your access token (Settings tab, or the HF_TOKEN environment variable).") from None
    except RepositoryNotFoundError:
        raise error(
            f"{repo_id} was not found on the Hugging Face hub (or it is private: set your access token).") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        from .failures import disk_full_message, is_disk_full

        if is_disk_full(e):
            raise error(f"Could not get {repo_id}: "
                        + disk_full_message(getattr(e, "filename", None) or _hub_cache(), then="try again")) from None
        raise error(
            f"Could not get {repo_id}: the hub cannot be reached from here ({type(e).__name__}) and no complete "
            f"copy is in the local cache. " + (advice or f"Download it on a computer with internet (for example "
                                                          f"`hf download {repo_id}`).")) from None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
