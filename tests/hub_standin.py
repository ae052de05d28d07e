"""A local stand-in for the Hugging Face hub's file API (HF_ENDPOINT=http://127.0.0.1:<port>), for download tests.

Serves `/<org>/<repo>/resolve/<revision>/<path>` for HEAD (the metadata huggingface_hub reads: X-Repo-Commit,
X-Linked-Etag = sha256, X-Linked-Size, ETag) and GET (206 for a Range request, 416 past the end). A gated repo
answers 401 with X-Error-Code GatedRepo without a token, 401 "Invalid credentials" for the token "bad", 403 for
"noaccess" and the file for "good". Every request is recorded (method, path, Range header).
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hub:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}  # (repo, path) -> content
        self.gated: set[str] = set()
        self.served_sha: dict[tuple[str, str], str] = {}  # a wrong sha to claim (damaged-download tests)
        self.requests: list[tuple[str, str, str | None]] = []
        self.delay = 0.0  # seconds between 64 KiB chunks of a download (a slow connection)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo: str, path: str, content: bytes) -> str:
        self.files[(repo, path)] = content
        return hashlib.sha256(content).hexdigest()

    def __enter__(self) -> "Hub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._status(404, {"X-Error-Code": "RepoNotFound"})
                repo, path = "/".join(parts[:2]), "/".join(parts[4:])
                if repo in hub.gated:
                    auth = self.headers.get("Authorization", "")
                    if not auth:
                        return self._status(401, {"X-Error-Code": "GatedRepo"},
                                            f"Access to model {repo} is restricted.")
                    if auth.endswith(" bad"):
                        return self._status(401, {}, "Invalid credentials in Authorization header")
                    if auth.endswith(" noaccess"):
                        return self._status(403, {}, f"Access to model {repo} is restricted and you are not in "
                                                     "the authorized list.")
                content = hub.files.get((repo, path))
                if content is None:
                    return self._status(404, {"X-Error-Code": "EntryNotFound"}, "Entry not found")
                sha = hub.served_sha.get((repo, path), hashlib.sha256(content).hexdigest())
                start, end = 0, len(content)
                rng = self.headers.get("Range")
                if rng and body:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(content):
                        return self._status(416, {"Content-Range": f"bytes */{len(content)}"})
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(content)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", "0" * 40)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(content)))
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                if body:
                    import time

                    for i in range(start, end, 1 << 16):
                        self.wfile.write(content[i:min(end, i + (1 << 16))])
                        if hub.delay:
                            self.wfile.flush()
                            time.sleep(hub.delay)

            def _status(self, code: int, headers: dict, text: str = "") -> None:
                data = text.encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

        return Handler
