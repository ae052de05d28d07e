"""The Training tab's "Download a base model" panel: the catalog of recommended base models (core/models/catalog.py),
and a download that runs in its own process (`python -m core models get ... --status FILE`), so it goes on when the
browser is closed and shows up again after a reload; started again, it resumes. Behaviour in plain functions, the
layout in `build`."""
from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr

from core import families
from core.failures import PROJECT_ROOT, free_bytes, size_text

from .settings import Settings


def _catalog(settings: Settings):
    from core.models.catalog import load_catalog

    return load_catalog(folders=settings.model_dirs())


def choices(settings: Settings) -> list[tuple[str, str]]:
    out = []
    for e in _catalog(settings):
        gate = " · gated" if e.gated else ""
        out.append((f"{families.title(e.family)} · {e.title} · {size_text(e.size)}{gate}", e.name))
    return out


def entry_html(settings: Settings, name: str | None) -> str:
    """What the chosen entry is: files, size against the free space, licence, gate, GPU, sources."""
    if not name:
        return ""
    from core.models.catalog import CatalogError, find_entry

    try:
        e = find_entry(_catalog(settings), name)
    except CatalogError as err:
        return f'<div class="lw-errors">{html.escape(str(err))}</div>'
    free = free_bytes(settings.models_dir)
    files = "".join(f"<li><code>{html.escape(f.name)}</code> ({size_text(f.size)}, from {html.escape(f.repo)})</li>"
                    for f in e.files)
    gate = (f'<p><b>Gated:</b> open <a href="{e.licence_page}" target="_blank">{e.licence_page}</a>, log in and '
            "accept the licence, then set your Hugging Face token in the Settings tab.</p>" if e.gated else "")
    room = "" if free >= e.size else (f'<p class="lw-warn"><b>Not enough space:</b> {size_text(e.size)} needed, '
                                      f"{size_text(free)} free in {html.escape(settings.models_dir)}.</p>")
    tier = f" · for GPUs with {e.vram_tier} GB or more (with the memory savings)" if e.vram_tier else ""
    return (f"<p><b>{html.escape(e.title)}</b> · {size_text(e.size)} · licence <code>{html.escape(e.license)}</code>"
            f"{tier}</p><ul>{files}</ul>{gate}{room}<p class='lw-small'>Goes to {html.escape(settings.models_dir)}; "
            "each file is checked against its sha256 before it takes its name.</p>")


def _status_file(settings: Settings) -> Path:
    return Path(settings.models_dir).expanduser() / ".downloads" / "status.json"


def read_status(settings: Settings) -> dict | None:
    try:
        return json.loads(_status_file(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def start(settings: Settings, name: str | None) -> str:
    """Start downloading `name` in its own process; returns what happened, as HTML."""
    if not name:
        return '<div class="lw-errors">Choose a model from the list first.</div>'
    st = read_status(settings)
    if st and st.get("state") == "running" and _alive(settings):
        return f'<div class="lw-errors">{html.escape(st.get("title", ""))} is still downloading.</div>'
    status = _status_file(settings)
    status.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "core", "models", "get", name, "--to", settings.models_dir, "--status", str(status)]
    for folder in settings.model_dirs():
        cat = Path(folder).expanduser() / "catalog.toml"
        if cat.is_file():
            cmd += ["--catalog", str(cat)]
    # the first status before the process starts: the process's own (even a quick "completed") comes after it
    status.write_text(json.dumps({"name": name, "title": name, "state": "running", "done": 0, "total": 0,
                                  "words": "Starting the download"}))
    env = {**os.environ, **settings.trainer_env()}
    log = open(status.with_name("download.log"), "ab")
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    status.with_name("pid").write_text(str(proc.pid))
    return status_html(read_status(settings))


def _alive(settings: Settings) -> bool:
    try:
        pid = int(_status_file(settings).with_name("pid").read_text())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def status_html(st: dict | None, alive: bool = True) -> str:
    if not st:
        return ""
    state = st.get("state")
    if state == "running" and not alive:
        state, st = "failed", {**st, "words": "The download stopped before it was complete; press Download to resume."}
    pct = 100.0 * st.get("done", 0) / st["total"] if st.get("total") else 0.0
    kind = {"completed": "done", "failed": "err"}.get(state, "running")
    bar = (f'<div class="lw-bar" role="progressbar" aria-valuenow="{pct:.0f}"><div class="lw-fill lw-{kind}" '
           f'style="width:{pct:.1f}%"></div></div>')
    head = {"completed": "Downloaded", "failed": "Not downloaded"}.get(state, "Downloading")
    return (f'<div id="models-state" data-state="{state}">{bar}<b>{head}: {html.escape(st.get("title", ""))}</b> · '
            f"{html.escape(st.get('words', ''))}</div>")


def poll(settings: Settings) -> tuple[str, bool]:
    """(the status as HTML, whether a download is running)."""
    st = read_status(settings)
    alive = _alive(settings)
    return status_html(st, alive), bool(st and st.get("state") == "running" and alive)


def build(settings: Settings, blocks=None):
    """The accordion. Returns its poll event, for the Training tab to refresh its base model lists after it
    (`completed(settings)` says whether there is something new). `blocks`: a page load shows the download as it is
    now (one started before a reload goes on, and its progress comes back)."""
    with gr.Accordion("Download a base model", open=False, elem_id="models-accordion"):
        gr.Markdown("Recommended base models for each family, with the parts they need. Files are checked against "
                    "their sha256; an interrupted download resumes where it stopped.", elem_classes=["lw-small"])
        pick = gr.Dropdown(choices=choices(settings), value=None, label="Model", elem_id="models-pick")
        info = gr.HTML("", elem_id="models-info")
        get = gr.Button("Download", variant="secondary", elem_id="models-get")
        text, running = poll(settings)
        state = gr.HTML(text, elem_id="models-status")
        timer = gr.Timer(1.0, active=running)
    pick.change(lambda n: entry_html(settings, n), pick, info)
    get.click(lambda n: (start(settings, n), gr.Timer(active=True)), pick, [state, timer])

    def tick():
        text, running = poll(settings)
        return text, gr.Timer(active=running)

    if blocks is not None:
        blocks.load(tick, None, [state, timer])
    return timer.tick(tick, None, [state, timer])


def completed(settings: Settings) -> bool:
    return (read_status(settings) or {}).get("state") == "completed"
