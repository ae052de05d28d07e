"""Starting the GUI as run.sh does: the page opens in the browser once it answers, and a taken port 7860 (another
web UI) makes it take the next free one and say so; a port given with --port that is taken is an error."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import app  # noqa: E402
from gui_server import stop_process  # noqa: E402


def _args(*argv: str) -> argparse.Namespace:
    return app.parse_args(list(argv))


def test_when_the_browser_opens():
    desktop = {"DISPLAY": ":0"}
    assert app.wants_browser(_args("--inbrowser"), desktop, "linux")
    assert not app.wants_browser(_args(), desktop, "linux")  # app.py alone: no browser
    assert not app.wants_browser(_args("--inbrowser", "--no-browser"), desktop, "linux")
    assert not app.wants_browser(_args("--inbrowser"), {"DISPLAY": ":0", "LW_NO_BROWSER": "1"}, "linux")
    assert not app.wants_browser(_args("--inbrowser"), {}, "linux")  # a server or CI: no display
    assert app.wants_browser(_args("--inbrowser"), {"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert app.wants_browser(_args("--inbrowser"), {}, "win32")
    assert _args().port is None and _args("--port", "7870").port == 7870


def _listening_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        m = re.search(pattern, text)
        if m:
            return m
        assert proc.poll() is None or re.search(pattern, path.read_text(errors="replace")), text
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} not seen in {path}:\n{path.read_text(errors='replace')}")


@pytest.mark.skipif(sys.platform == "win32" or shutil.which("bash") is None, reason="runs run.sh")
def test_run_sh_takes_the_next_free_port_and_opens_the_page_once_it_answers(tmp_path):
    taken = _listening_socket()  # stands in for AUTOMATIC1111 on 7860
    port = taken.getsockname()[1]
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> '{opened}'\n")
    browser.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LW_NO_BROWSER", "WAYLAND_DISPLAY")}
    env.update(GRADIO_SERVER_PORT=str(port), DISPLAY=":99", BROWSER=str(browser))
    log = tmp_path / "app.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(["bash", str(REPO / "run.sh"), "--settings", str(tmp_path / "settings.json")],
                                cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        m = _wait_for(log, r"running at (http://127\.0\.0\.1:(\d+)/)", proc)
        url, got = m.group(1), int(m.group(2))
        assert port < got < port + 100 and f"Port {port} is in use" in log.read_text()  # the next free one
        assert urllib.request.urlopen(url, timeout=10).status == 200
        deadline = time.monotonic() + 30
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert opened.read_text().split() == [url]  # opened once, at the page that answers
    finally:
        stop_process(proc, 15)
        taken.close()


def test_a_taken_port_given_with_port_is_an_error(tmp_path):
    taken = _listening_socket()
    port = taken.getsockname()[1]
    try:
        p = subprocess.run([sys.executable, str(REPO / "app.py"), "--port", str(port), "--no-browser",
                            "--settings", str(tmp_path / "settings.json")], cwd=tmp_path, capture_output=True,
                           text=True, timeout=180)
    finally:
        taken.close()
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in p.stderr and "Use --port" in p.stderr
