"""CPU the browser spends on the GUI's Training page, printed as JSON: Debian's chromium opens the app (real
trainer, an empty models folder, so the form holds the built-in demo), and the CPU seconds per second of every
chromium process are measured while the page idles and while the demo trains beside it (on a 2-core machine
each tenth of a core the page takes is a tenth the training does not get). Run it on an idle machine.

  python bench/gui_cpu.py
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def chromium_cpu(seconds: float) -> float:
    """CPU seconds per second of all chromium processes over `seconds`."""
    import psutil

    def total() -> float:
        t = 0.0
        for p in psutil.process_iter(["name"]):
            if "chrom" in (p.info["name"] or ""):
                try:
                    c = p.cpu_times()
                    t += c.user + c.system
                except psutil.Error:
                    pass
        return t

    t0 = total()
    time.sleep(seconds)
    return round((total() - t0) / seconds, 3)


def main() -> None:
    from playwright.sync_api import sync_playwright

    from gui_server import CHROMIUM, CHROMIUM_ARGS, app_page, app_with_real_trainer

    root = Path(tempfile.mkdtemp(prefix="lw-gui-cpu-"))
    (root / "models").mkdir()
    out: dict[str, object] = {"date": time.strftime("%Y-%m-%d")}
    with app_with_real_trainer(root, root / "models", root / "out") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        with app_page(browser, url, "#start-btn") as page:
            time.sleep(5)
            out["idle_page_cores"] = chromium_cpu(15)
            page.click("#start-btn")
            page.wait_for_selector("#stop-btn", state="visible", timeout=120_000)
            time.sleep(15)  # past loading and caching: training steps
            out["training_page_cores"] = chromium_cpu(20)
            page.click("#stop-btn")
        browser.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
