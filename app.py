"""LoRA Workshop GUI.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass] [--inbrowser | --no-browser]

The page listens on 127.0.0.1 only, unless --host says otherwise; anything reachable from other
machines (another --host, or --share) needs --auth. Without --port it takes 7860, or the next free port when
another web UI (AUTOMATIC1111, Forge, ComfyUI) already has it, and says so. run.sh / run.bat add --inbrowser:
the page opens in the default browser once it answers (--no-browser or LW_NO_BROWSER=1 to not).
Heavy ML libraries are not imported here: the trainer runs as its own process (`python -m core train`).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="LoRA Workshop: the web GUI.")
    p.add_argument("--host", default="127.0.0.1",
                   help="Address to listen on (default 127.0.0.1: this computer only). Other addresses need --auth.")
    p.add_argument("--port", type=int, default=None,
                   help="Port (default: 7860, or the next free one when 7860 is taken).")
    p.add_argument("--share", action="store_true", help="Also make a public gradio.live link (needs --auth).")
    p.add_argument("--auth", metavar="USER:PASS", help="Require this user name and password.")
    p.add_argument("--inbrowser", action="store_true", help="Open the page in the default browser once it answers.")
    p.add_argument("--no-browser", action="store_true", help="Do not open the browser (wins over --inbrowser).")
    p.add_argument("--settings", metavar="PATH", default=str(PROJECT_ROOT / "settings.json"),
                   help="Settings file (default: settings.json in the project folder).")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must look like user:password (both parts non-empty)")
    return user, password


def wants_browser(args: argparse.Namespace, env: dict[str, str] | None = None, platform: str = sys.platform) -> bool:
    """--inbrowser, unless --no-browser, LW_NO_BROWSER or a Linux session without a display (a server, CI)."""
    env = os.environ if env is None else env
    if not args.inbrowser or args.no_browser or env.get("LW_NO_BROWSER", "").strip() not in ("", "0"):
        return False
    if platform.startswith("linux"):
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


def open_when_ready(url: str, timeout: float = 30.0) -> bool:
    """Open url in the default browser as soon as it answers; False when it did not answer in time."""
    import time
    import urllib.request
    import webbrowser

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            time.sleep(0.25)
    else:
        return False
    webbrowser.open(url)
    return True


def guard_middleware(args: argparse.Namespace):
    """ui/web_guard.py's checks: loopback Host names only while the GUI is on this computer only (with --host or
    --share the password guards it), and the file route serves only what the GUI has shown."""
    from starlette.middleware import Middleware
    from ui.web_guard import WebGuard

    return Middleware(WebGuard, check_host=is_loopback(args.host) and not args.share)


def exposure_problem(args: argparse.Namespace) -> str | None:
    """Why these options would expose the GUI without a password, or None."""
    if args.auth:
        return None
    if args.share:
        return ("--share makes the GUI reachable from the internet, and anyone with the link could start trainings "
                "and read your files. Add --auth user:password.")
    if not is_loopback(args.host):
        return (f"--host {args.host} makes the GUI reachable from other computers. Add --auth user:password, or "
                "leave --host out to stay on this computer only.")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        auth = parse_auth(args.auth)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problem = exposure_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    from core.logs import quiet_library_notices

    quiet_library_notices()  # the Generate tab loads diffusers (and so bitsandbytes) in this process
    from ui.app_ui import CSS, build_app
    from ui.settings import load_settings

    settings = load_settings(args.settings)
    demo, _ctx = build_app(settings)
    allowed = [str(Path(d).expanduser().resolve()) for d in (settings.outputs_dir, settings.loras_dir) if d]
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
                            inbrowser=False, allowed_paths=allowed, css=CSS, quiet=True,
                            footer_links=["gradio", "settings"], show_error=True, prevent_thread_lock=True,
                            app_kwargs={"middleware": [guard_middleware(args)]})
    except OSError as e:
        where = f"{args.host}:{args.port}" if args.port else f"{args.host} (ports from 7860 on)"
        print(f"error: cannot listen on {where}: {e}. Use --port to choose another port.", file=sys.stderr)
        return 1
    first_port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)  # where gradio starts looking
    if args.port is None and demo.server_port != first_port:
        print(f"Port {first_port} is in use (another web UI such as AUTOMATIC1111, Forge or ComfyUI?): "
              f"using port {demo.server_port}.", flush=True)
    print(f"LoRA Workshop is running at {demo.local_url}", flush=True)
    if wants_browser(args):
        import threading

        threading.Thread(target=open_when_ready, args=(demo.local_url,), daemon=True).start()
    if demo.share_url:
        print(f"Public link (password protected): {demo.share_url}", flush=True)
    print("Press Ctrl+C to quit. Trainings keep running when the GUI is closed.", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
