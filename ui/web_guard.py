"""What the GUI's web server answers, before any of gradio's routes runs.

- Bound to this computer only (the default), it answers only requests whose Host is a loopback name
  (127.0.0.1, localhost, [::1], any port). A web page on another domain that re-points its name at 127.0.0.1
  (DNS rebinding) sends its own name as Host and gets 403: it cannot read LoRAs, dataset pictures or drive
  training. With --host or --share (which require --auth) every name is answered: the password guards it.
- The file route (/gradio_api/file=PATH) serves only what the GUI has shown: gradio copies every image or file a
  component displays into its upload folder, and only files there (and gradio's own static files) are served.
  The outputs and LoRA folders stay readable by the GUI's functions (launch's allowed_paths) but not by URL.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

LOOPBACK_NAMES = {"localhost", "localhost."}


def host_name(header: str) -> str:
    """The name of a Host header without its port: '[::1]:7860' -> '::1', 'localhost:7860' -> 'localhost'."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    if h.count(":") == 1:
        return h.split(":", 1)[0]
    return h


def is_loopback_host(header: str | None) -> bool:
    if header is None:  # HTTP/1.0 without Host: not something a browser page can send
        return True
    name = host_name(header)
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def served_roots() -> list[Path]:
    """Where the file route may read: gradio's upload folder (copies of what components showed), its examples
    cache and its static files."""
    from gradio.data_classes import _StaticFiles
    from gradio.utils import get_cache_folder, get_upload_folder

    return [Path(get_upload_folder()).resolve(), get_cache_folder().resolve(), *_StaticFiles.all_paths]


def file_route_target(path: str) -> str | None:
    """The file a /gradio_api/file=... (or the old /file=...) request asks for; None for other routes."""
    if "/file=" not in path:
        return None
    return unquote(path.split("/file=", 1)[1])


def file_allowed(target: str, roots: list[Path]) -> bool:
    if target.startswith(("http://", "https://")):
        return True  # gradio's own checks (it fetches public URLs only)
    try:
        p = Path(target).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(p == r or r in p.parents for r in roots)


class WebGuard:
    """ASGI middleware applying the two rules above."""

    def __init__(self, app, check_host: bool = True, roots: Callable[[], list[Path]] = served_roots) -> None:
        self.app, self.check_host, self.roots = app, check_host, roots

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host")
            if self.check_host and not is_loopback_host(host.decode("latin-1") if host is not None else None):
                return await self._refuse(scope, send, "This page answers only at http://127.0.0.1 (this computer); "
                                          "a request for another host name was refused.")
            target = file_route_target(scope.get("path", ""))
            if target is not None and not file_allowed(target, self.roots()):
                return await self._refuse(scope, send, "File not served: the GUI serves only the images and files "
                                          "it shows.")
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send, text: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = text.encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
