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


# Counts the app's events in flight: a queued event from its join until its "process_completed" message in the
# event stream (gradio's client reads it with fetch), a direct call until its answer. `settle` waits until none is: tests wait on that, never on a delay.
EVENTS_IN_FLIGHT_JS = r"""
(() => {
  if (window.__lwFetch) return;
  const lw = window.__lw = {joining: 0, calls: 0, waiting: new Set(), completed: new Set()};
  // joining: join requests not answered yet; waiting: events the stream has named (queued, started) and not
  // completed
  const orig = window.__lwFetch = window.fetch.bind(window);
  const finished = (id) => {  // two frames later: an event chained with .then() has started joining by then
    requestAnimationFrame(() => requestAnimationFrame(() => { lw.completed.add(id); lw.waiting.delete(id); }));
  };
  const watched = (body) => {  // the stream as it is, read through: its "process_completed" lines are noted
    const src = body.getReader(), dec = new TextDecoder();
    let buf = "";
    return new ReadableStream({
      async pull(ctrl) {
        const r = await src.read();
        if (r.done) { ctrl.close(); return; }
        buf += dec.decode(r.value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 1);
          if (!line.startsWith("data:")) continue;
          let m;
          try { m = JSON.parse(line.slice(5)); } catch (e) { continue; }
          if (!m.event_id) continue;
          if (m.msg === "process_completed") finished(m.event_id);
          else if (!lw.completed.has(m.event_id)) lw.waiting.add(m.event_id);
        }
        ctrl.enqueue(r.value);
      },
      cancel(reason) { return src.cancel(reason); },  // the client closing the stream closes the connection
    });
  };
  window.fetch = async (input, init) => {
    const url = String((input && input.url) || input);
    const join = url.includes("/queue/join"), call = url.includes("/gradio_api/run/");
    if (join) lw.joining++;
    if (call) lw.calls++;
    try {
      const r = await orig(input, init);
      if (url.includes("/queue/data") && r.body) {
        return new Response(watched(r.body), {status: r.status, statusText: r.statusText, headers: r.headers});
      }
      return r;
    } finally {  // a join is answered before the stream names its event: counted two frames longer
      if (join) requestAnimationFrame(() => requestAnimationFrame(() => { lw.joining--; }));
      if (call) lw.calls--;
    }
  };
})();
"""


def settle(page, timeout: float = 30_000) -> None:
    """Wait until the page has sent what the last action triggers (two animation frames) and the app has answered
    every event in flight (the 1 s timers' included)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    busy = "() => window.__lw && (window.__lw.joining + window.__lw.calls + window.__lw.waiting.size)"
    try:
        page.wait_for_function(f"() => !({busy})()", timeout=timeout, polling="raf")
    except playwright_api.TimeoutError as e:
        raise AssertionError("events still unanswered: " + str(page.evaluate(
            "() => [window.__lw.joining, window.__lw.calls, [...window.__lw.waiting]]"))) from e


@contextmanager
def app_page(browser, url: str, ready_selector: str, tab: str | None = None, height: int = 1000,
             timeout: float = 30_000) -> Iterator:
    """A new 1400 px wide page of the app at ``url`` (with the tab named ``tab`` open), once ``ready_selector``
    shows and the page's load events are answered; closed afterwards."""
    pg = browser.new_page(viewport={"width": 1400, "height": height})
    pg.add_init_script(EVENTS_IN_FLIGHT_JS)
    pg.set_default_timeout(timeout)
    try:
        pg.goto(url)
        if tab:
            pg.get_by_role("tab", name=tab, exact=True).click()
        pg.wait_for_selector(ready_selector)
        settle(pg, timeout=max(timeout, 60_000))
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
    """A full-page screenshot once the app has answered every event, CSS animations finished."""
    ARTIFACTS.mkdir(exist_ok=True)
    settle(page)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True, animations="disabled")


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
    """Type `value` into the Training form's setting `name`, leave the field (Enter or Tab) and wait until the app
    has answered what that triggered."""
    box = field(page, name)
    box.wait_for(state="visible")
    want = shown(value)
    for _ in range(3):  # a field that was just rendered (opened accordion) may reset itself once
        box.fill(str(value))
        box.press("Enter" if enter else "Tab")
        settle(page)
        if want.match(box.input_value()):
            return
    playwright_api.expect(box).to_have_value(want)


def _type_and_leave(page, box, value) -> None:
    box.fill(str(value))
    box.press("Tab")
    settle(page)
    playwright_api.expect(box).to_have_value(str(value))


def fill_id(page, elem_id: str, value) -> None:
    """Type `value` into the text box or number of the component `elem_id` and leave it."""
    _type_and_leave(page, page.locator(f"#{elem_id} input, #{elem_id} textarea").first, value)


def set_number(page, elem_id: str, value) -> None:
    _type_and_leave(page, page.locator(f"#{elem_id} input[type=number]").first, value)


def choose(page, elem_id: str, text: str, exact: bool = False) -> None:
    """Open the dropdown `elem_id`, click its option named `text` (exact) or the first containing it, and wait
    until the app has answered the change."""
    page.locator(f"#{elem_id} input").first.click()
    if exact:
        page.get_by_role("option", name=text, exact=True).click()
    else:
        page.locator(f"#{elem_id} li[role=option]", has_text=text).first.click()
    settle(page)
