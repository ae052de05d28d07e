"""Helpers of the GUI tests: run the app in a subprocess until it answers; what building a tab imports."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

try:
    from playwright import sync_api as playwright_api
except ImportError:  # the browser tests skip; the others still run
    playwright_api = None


@contextmanager
def running_app(cmd: list[str], port: int, root: Path, env: dict[str, str],
                timeout: float = 90) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``cmd`` (an app serving on ``port``) in ``root``, output in ``root/app.log``; yield (url, process)
    once the page answers, and stop the app afterwards."""
    log = open(root / "app.log", "wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if urllib.request.urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (root / "app.log").read_text()
            assert time.time() < deadline, "the app did not answer"
            time.sleep(0.3)
        yield url, proc
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def app_with_real_trainer(root: Path, models: Path, out: Path) -> Iterator[str]:
    """app.py with its settings in `root` (models folder `models`, LoRAs and outputs in `out`), the real trainer,
    offline; yields the page's URL."""
    import json

    settings = root / "settings.json"
    settings.write_text(json.dumps({"models_dir": str(models), "loras_dir": str(out), "outputs_dir": str(out)}))
    env = {k: v for k, v in os.environ.items() if k != "LW_TRAINER_CMD"}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    port = free_port()
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)]
    with running_app(cmd, port, root, env) as (url, _):
        yield url


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Ask a process to end (SIGTERM), and kill it if it has not within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@contextmanager
def app_page(browser, url: str, ready_selector: str, tab: str | None = None, height: int = 1000,
             timeout: float = 30_000) -> Iterator:
    """A new 1400 px wide page of the app at ``url`` (with the tab named ``tab`` open), once ``ready_selector``
    shows; closed afterwards."""
    pg = browser.new_page(viewport={"width": 1400, "height": height})
    pg.set_default_timeout(timeout)
    try:
        pg.goto(url)
        if tab:
            pg.get_by_role("tab", name=tab, exact=True).click()
        pg.wait_for_selector(ready_selector)
        yield pg
    finally:
        pg.close()


ML_MODULES = ("torch", "diffusers", "transformers", "peft", "onnxruntime", "open_clip", "clip_interrogator")


def ml_modules_imported_by(build: str, folder: Path) -> list[str]:
    """The ML libraries a fresh Python has imported after running ``build`` inside ``with gr.Blocks():``
    (``gr`` is gradio, ``FOLDER`` the path ``folder``): building a tab must import none, so the app starts fast."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import gradio as gr\nFOLDER = sys.argv[2]\n"
            "with gr.Blocks() as demo:\n" + textwrap.indent(build.strip(), "    ") + "\n"
            f"print(sorted(m for m in {ML_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO), str(folder)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- page helpers (every GUI module)
ARTIFACTS = REPO / "test-artifacts"  # screenshots of the GUI tests, for a person to look at


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def field(page, name: str):
    """The input of the Training form's setting `name`."""
    return page.locator(f"#field-{name}").locator("textarea, input").first


def shown(value: object):
    """What a field shows for `value`: the value, or (a path that is one of a dropdown's choices) the choice's
    label, which names the file or folder ("Flux.1 · tiny-flux-dev (diffusers folder)")."""
    import re

    text, name = str(value), Path(str(value)).name
    return re.compile(rf"^({re.escape(text)}|.*\b{re.escape(name)}\b.*)$") if name and name != text else re.compile(
        rf"^{re.escape(text)}$")


def fill(page, name: str, value: object, enter: bool = False) -> None:
    """Type `value` into the Training form's setting `name` and leave the field (Enter or Tab)."""
    box = field(page, name)
    box.wait_for(state="visible")
    want = shown(value)
    for _ in range(3):  # a field that was just rendered (opened accordion) may reset itself once
        box.fill(str(value))
        box.press("Enter" if enter else "Tab")
        page.wait_for_timeout(200)
        if want.match(box.input_value()):
            return
    playwright_api.expect(box).to_have_value(want)


def _type_and_leave(page, box, value) -> None:
    box.fill(str(value))
    box.press("Tab")
    page.wait_for_timeout(200)
    playwright_api.expect(box).to_have_value(str(value))


def fill_id(page, elem_id: str, value) -> None:
    """Type `value` into the text box or number of the component `elem_id` and leave it."""
    _type_and_leave(page, page.locator(f"#{elem_id} input, #{elem_id} textarea").first, value)


def set_number(page, elem_id: str, value) -> None:
    _type_and_leave(page, page.locator(f"#{elem_id} input[type=number]").first, value)


def choose(page, elem_id: str, text: str, exact: bool = False) -> None:
    """Open the dropdown `elem_id` and click its option named `text` (exact) or the first containing it."""
    page.locator(f"#{elem_id} input").first.click()
    if exact:
        page.get_by_role("option", name=text, exact=True).click()
        return
    page.locator(f"#{elem_id} li[role=option]", has_text=text).first.click()
    page.wait_for_timeout(300)
