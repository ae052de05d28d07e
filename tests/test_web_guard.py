"""ui/web_guard.py: which Host names the GUI answers, and what the file route serves (the running app is
tested in test_gui_training: a foreign Host gets 403, a sample image is served, a LoRA by path is not)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ui.web_guard import WebGuard, file_allowed, file_route_target, host_name, is_loopback_host


@pytest.mark.parametrize("header, loopback", [
    ("127.0.0.1:7860", True), ("127.0.0.1", True), ("localhost:7861", True), ("LOCALHOST", True),
    ("[::1]:7860", True), ("127.3.4.5:80", True),
    ("evil.example:7860", False), ("evil.example", False), ("192.168.1.20:7860", False), ("0.0.0.0:7860", False),
    ("localhost.evil.example:7860", False), ("[2001:db8::1]:7860", False), ("", False),
])
def test_loopback_host_names(header, loopback):
    assert is_loopback_host(header) is loopback
    assert host_name("[::1]:7860") == "::1" and host_name("localhost:7860") == "localhost"


def test_file_route_targets(tmp_path):
    assert file_route_target("/gradio_api/file=/tmp/gradio/abc/x.png") == "/tmp/gradio/abc/x.png"
    assert file_route_target("/file=%2Ftmp%2Fa%20b.png") == "/tmp/a b.png"
    assert file_route_target("/gradio_api/info") is None
    cache = tmp_path / "gradio"
    (cache / "abc").mkdir(parents=True)
    shown = cache / "abc" / "sample.png"
    shown.write_bytes(b"png")
    assert file_allowed(str(shown), [cache.resolve()])
    assert not file_allowed(str(tmp_path / "outputs" / "my_lora.safetensors"), [cache.resolve()])
    assert not file_allowed(str(cache / ".." / "outputs" / "x.png"), [cache.resolve()])  # no climbing out
    assert file_allowed("https://huggingface.co/x.png", [])  # gradio's own URL checks apply


def _call(check_host: bool, roots: list[Path], path: str, host: str | None,
          kind: str = "http") -> tuple[list[dict], bool]:
    """(what the guard sent, whether the request reached the app behind it)."""
    sent, reached = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def send(message):
        sent.append(message)

    headers = [(b"host", host.encode())] if host is not None else []
    asyncio.run(WebGuard(app, check_host, lambda: roots)({"type": kind, "path": path, "headers": headers}, None,
                                                         send))
    return sent, bool(reached)


def test_the_guard_refuses_before_the_route_runs(tmp_path):
    roots = [tmp_path.resolve()]
    sent, reached = _call(True, roots, "/", "evil.example")
    assert sent[0]["status"] == 403 and not reached
    assert b"another host name" in sent[1]["body"]
    sent, reached = _call(True, roots, "/gradio_api/info", "127.0.0.1:7860")
    assert not sent and reached
    sent, reached = _call(True, roots, "/queue/join", "evil.example", "websocket")
    assert sent == [{"type": "websocket.close", "code": 1008}] and not reached
    sent, reached = _call(True, roots, f"/gradio_api/file={tmp_path / 'x.png'}", "localhost:7860")
    assert not sent and reached
    sent, reached = _call(True, roots, "/gradio_api/file=/etc/passwd", "localhost:7860")
    assert sent[0]["status"] == 403 and not reached
    # exposed with --host/--share (and --auth): every name is answered, the file rule still holds
    sent, reached = _call(False, roots, "/gradio_api/info", "my-pc.lan:7860")
    assert not sent and reached
    sent, reached = _call(False, roots, "/gradio_api/file=/etc/passwd", "my-pc.lan:7860")
    assert sent[0]["status"] == 403 and not reached
