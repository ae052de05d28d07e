"""Downloading a catalog entry's files through huggingface_hub, with what it does not do itself (huggingface_hub 2.4
checks no sha256, resumes only within one call, hides its progress when piped, names no page for a gated repo):

- the free disk is checked before anything is fetched;
- each file grows as `<name>.part` in the target folder and is resumed with a Range request after an interruption,
  a closed window or a reboot (huggingface_hub's `http_get` with `resume_size`);
- its sha256 is checked against the catalog's (else the hub's own, the LFS etag) before it takes its final name
  by an atomic rename: a file under the final name is always complete; a mismatch deletes the part file;
- progress (bytes, %, speed, ETA) goes to a callback, also when piped;
- gated repos, missing or invalid tokens, offline mode and an unreachable hub are said plainly, with the page to open.

URLs come from huggingface_hub (`hf_hub_url`), so HF_ENDPOINT (mirrors, proxies, the tests' stand-in) and the token
work as everywhere else. A file already in the folder is kept when it checks out, and never overwritten when not.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

from ..failures import free_bytes, size_text
from .catalog import CatalogEntry, CatalogFile

Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, words)
MARGIN = 256 * 1024 ** 2  # free space kept beyond the files


class DownloadError(ValueError):
    """A download that cannot be done; the message says why and what to do."""


def _sha256(path: Path, say: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
            done += len(chunk)
            if say:
                say(done)
    return h.hexdigest()


def _speed_words(done: int, total: int, started: float, start_bytes: int) -> str:
    spent = max(time.monotonic() - started, 1e-6)
    rate = (done - start_bytes) / spent
    left = (total - done) / rate if rate > 0 else None
    eta = "" if left is None else (f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left")
    return f"{size_text(done)} of {size_text(total)} ({100 * done / max(total, 1):.0f}%), {size_text(int(rate))}/s{eta}"


def _hub_error(e: Exception, entry: CatalogEntry, f: CatalogFile, token: str | None) -> DownloadError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError)

    page = f"https://huggingface.co/{f.repo}"
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return DownloadError(f"Offline mode is on (HF_HUB_OFFLINE=1), so {f.name} cannot be downloaded. Unset "
                             "HF_HUB_OFFLINE, or copy the file into the models folder by hand.")
    if isinstance(e, GatedRepoError) or status == 403:
        if token and status == 403:
            return DownloadError(f"{f.repo} is gated and your Hugging Face account has no access yet: open {page}, "
                                 "accept the licence while logged in, then try again (access is usually granted at "
                                 "once).")
        return DownloadError(f"{f.repo} is gated: open {page}, log in and accept the licence, then set your access "
                             "token (Settings tab, or the HF_TOKEN environment variable; a 'read' token from "
                             "huggingface.co/settings/tokens) and try again.")
    if status == 401:
        return DownloadError(f"The Hugging Face hub refused the access token for {f.repo} (invalid or expired): "
                             "make a new 'read' token at huggingface.co/settings/tokens and set it in the Settings "
                             "tab or HF_TOKEN.")
    if isinstance(e, (RepositoryNotFoundError, EntryNotFoundError)) or status == 404:
        return DownloadError(f"{f.repo}/{f.path} was not found on the hub (the catalog entry '{entry.name}' "
                             f"({entry.catalog}) may be outdated, or the repo private: set your token).")
    # huggingface_hub's HTTP client (httpx2) raises its own TransportError family for refused connections and
    # time-outs
    network = any(c.__name__ in ("TransportError", "TimeoutException") for c in type(e).__mro__)
    if network or isinstance(e, (HfHubHTTPError, OSError, ConnectionError)):
        return DownloadError(f"Could not reach the Hugging Face hub ({constants.ENDPOINT}) for {f.name}: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}. Check the "
                             "internet connection (or HF_ENDPOINT for a mirror) and try again: the download resumes "
                             "where it stopped.")
    return DownloadError(f"Could not download {f.name}: {type(e).__name__}: {e}")


def _check_present(path: Path, f: CatalogFile) -> bool:
    """True when `path` is the catalog's file (size, and sha256 when known); raise when a different file has
    its name (it is the user's: never overwritten)."""
    if not path.exists():
        return False
    if path.stat().st_size == f.size and (not f.sha256 or _sha256(path) == f.sha256):
        return True
    raise DownloadError(f"{path} already exists but is not the catalog's {f.name} (another size or checksum). "
                        "Nothing was overwritten: move or rename that file, or download into another folder.")


def get_model(entry: CatalogEntry, folder: str | Path, *, token: str | None = None,
              progress: Progress | None = None) -> list[Path]:
    """Every file of `entry` complete and verified in `folder`; returns their paths. Raises DownloadError."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import get_hf_file_metadata, http_get
    from huggingface_hub.utils import build_hf_headers
    from tqdm.auto import tqdm

    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot create the folder {folder}: {e.strerror or e}") from None
    token = token or os.environ.get("HF_TOKEN") or None
    say = progress or (lambda done, total, words: None)
    todo = [(f, folder / f.name) for f in entry.files]
    need = sum(f.size - (p.with_name(p.name + ".part").stat().st_size if p.with_name(p.name + ".part").exists() else 0)
               for f, p in todo if not p.exists())
    free = free_bytes(folder)
    if need + MARGIN > free:
        raise DownloadError(f"Not enough free space in {folder}: {entry.title} needs {size_text(need)} more, "
                            f"{size_text(free)} is free. Free some space or choose a folder on another drive.")
    total, done = entry.size, 0
    out = []
    for f, final in todo:
        if _check_present(final, f):
            done += f.size
            say(done, total, f"{f.name} is already there")
            out.append(final)
            continue
        url = hf_hub_url(f.repo, f.path)
        try:
            meta = get_hf_file_metadata(url, token=token)
        except Exception as e:  # noqa: BLE001 - every failure becomes a plain message
            raise _hub_error(e, entry, f, token) from None
        if meta.size is not None and meta.size != f.size:
            raise DownloadError(f"The hub's {f.repo}/{f.path} is {meta.size:,} bytes, the catalog says {f.size:,}: "
                                f"the file changed since the catalog ({entry.catalog}) was written. Nothing was "
                                "downloaded.")
        hub_sha = (meta.etag or "").strip('"').lower()
        want = f.sha256 or (hub_sha if len(hub_sha) == 64 else "")
        part = final.with_name(final.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > f.size:
            part.unlink()
            have = 0
        started, base = time.monotonic(), done + have

        class Bar(tqdm):  # http_get's progress bar, reported to `say` (also when nothing is a terminal)
            def __init__(self, *a, **k):
                k["disable"] = True
                super().__init__(*a, **k)
                self.got = have

            def update(self, n=1):
                self.got += n or 0
                now = done + self.got
                say(now, total, f"Downloading {f.name}: " + _speed_words(now, total, started, base))

        if have:
            say(base, total, f"Resuming {f.name} at {size_text(have)}")
        try:
            with open(part, "ab") as fh:
                http_get(meta.location, fh, resume_size=have, headers=build_hf_headers(token=token),
                         expected_size=f.size, displayed_filename=f.name, tqdm_class=Bar)
        except OSError as e:
            from ..failures import disk_full_message, is_disk_full

            if is_disk_full(e):
                raise DownloadError(disk_full_message(part, f.size - have, then="try again (it resumes)")) from None
            raise _hub_error(e, entry, f, token) from None
        except Exception as e:  # noqa: BLE001
            raise _hub_error(e, entry, f, token) from None
        if part.stat().st_size != f.size:
            raise DownloadError(f"{f.name}: got {part.stat().st_size:,} of {f.size:,} bytes; try again (it resumes).")
        if want:
            got = _sha256(part, lambda n: say(done + n, total, f"Checking {f.name} (sha256)"))
            if got != want:
                part.unlink()
                raise DownloadError(f"{f.name} arrived damaged: its sha256 is {got}, not {want}. The partial file "
                                    "was deleted and nothing was saved under its name; try again.")
        os.replace(part, final)
        done += f.size
        say(done, total, f"{f.name} complete" + (" and verified (sha256)" if want else " (size checked)"))
        out.append(final)
    return out
