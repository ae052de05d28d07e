"""Seconds from `python app.py` to the first HTTP 200 of the page, printed as JSON (goal: < 5 s).

  python bench/app_startup.py [--repeat 3]

The app runs with a throw-away settings file on a free port, and is stopped after each answer.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(timeout: float = 120.0) -> float:
    with tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp:
        settings = Path(tmp) / "settings.json"
        settings.write_text(json.dumps({"outputs_dir": str(Path(tmp) / "out"), "models_dir": str(Path(tmp) / "models")}))
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--settings", str(settings)],
                                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
        try:
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        if r.status == 200:
                            return time.perf_counter() - t0
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with code {proc.returncode}")
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError("no answer")
                time.sleep(0.05)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="starts to measure; the median is reported")
    args = ap.parse_args()
    times = [one_start() for _ in range(max(1, args.repeat))]
    print(json.dumps({"seconds_to_first_http_200": round(statistics.median(times), 2),
                      "runs": [round(t, 2) for t in times], "cpu_count": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
