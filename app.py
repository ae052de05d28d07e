"""LoRA Workshop GUI.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass] [--inbrowser]

The page listens on 127.0.0.1 only, unless --host says otherwise; anything reachable from other
machines (another --host, or --share) needs --auth. Heavy ML libraries are not imported here: the
trainer runs as its own process (`python -m core train`).
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
    p.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    p.add_argument("--share", action="store_true", help="Also make a public gradio.live link (needs --auth).")
    p.add_argument("--auth", metavar="USER:PASS", help="Require this user name and password.")
    p.add_argument("--inbrowser", action="store_true", help="Open the page in the default browser.")
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
                            inbrowser=args.inbrowser, allowed_paths=allowed, css=CSS, quiet=True,
                            footer_links=["gradio", "settings"], show_error=True, prevent_thread_lock=True)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}. Use --port to choose another port.",
              file=sys.stderr)
        return 1
    print(f"LoRA Workshop is running at {demo.local_url}", flush=True)
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
