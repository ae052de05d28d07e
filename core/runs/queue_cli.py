"""`python -m core queue add | list | remove | move | stop | clear | work`: the run queue from the command line.

Exit codes: 0 done, 2 a config error or a request the queue refuses (the message says why and what to do).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..cli_args import positive_int
from . import queue as q


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="queue_command", required=True,
                                metavar="{add,list,remove,move,stop,clear,work}")
    a = sub.add_parser("add", help="Queue a training; it starts when the runs before it have ended.",
                       description="Queue a training: its config (the TOML, then --set) is checked and saved in the "
                                   "queue folder now, so later edits of the TOML do not change it. Starts the queue's "
                                   "worker when none runs.")
    a.add_argument("--config", required=True, help="TOML config file (as for `python -m core train`).")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override one key (repeatable).")
    a.add_argument("--overwrite", action="store_true", help="Replace a run already in the run folder.")
    a.add_argument("--no-start", action="store_true", help="Only queue it; do not start the worker.")
    ls = sub.add_parser("list", help="Show the queue: waiting, running and ended runs.")
    ls.add_argument("--json", action="store_true", help="Print the entries as JSON (id, name, run_dir, state, "
                                                         "added_at/started_at/ended_at as unix seconds ...).")
    for name, text in (("remove", "Take a waiting run out of the queue."),
                       ("stop", "Stop the queued run that is training (it saves a resumable state); the queue "
                                "goes on.")):
        sub.add_parser(name, help=text, description=text).add_argument("id", help="The entry's id (`queue list`).")
    m = sub.add_parser("move", help="Move a waiting run sooner or later in the queue.")
    m.add_argument("id", help="The entry's id (`queue list`).")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--up", action="store_true", help="One place sooner.")
    g.add_argument("--down", action="store_true", help="One place later.")
    g.add_argument("--to", type=positive_int, metavar="N", help="To position N among the waiting runs (1 = next).")
    sub.add_parser("clear", help="Drop the ended entries (completed, failed, stopped, removed) from the list.")
    sub.add_parser("work", help="Work off the queue in this terminal (`add` starts this in the background); exits "
                                "when nothing waits, or at once when a worker already runs.")


def run(args: argparse.Namespace) -> int:
    return {"add": _add, "list": _list, "remove": _remove, "move": _move, "stop": _stop, "clear": _clear,
            "work": _work}[args.queue_command](args)


def _add(args: argparse.Namespace) -> int:
    from ..config.toml_io import ConfigError, load_config
    from .steps_plan import steps_plan

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"Config error in {args.config} (nothing was queued):", file=sys.stderr)
        for line in e.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    entry = q.add(cfg, overwrite=args.overwrite)
    items = q.entries()
    pos = q.position(items, q.find(items, entry.id))
    print(f"Queued '{entry.name}' as entry {entry.id} (position {pos} of {len(q.waiting(items))} waiting); run "
          f"folder {entry.run_dir}.")
    plan = steps_plan(cfg.train_data_dir, cfg.model_copy(update={"alpha_mask": False, "masked_loss": False}))
    for problem in plan.problems:
        print(f"Warning: {problem}", file=sys.stderr)
    if args.no_start:
        print("The worker was not started: `python -m core queue work` works off the queue.")
        return 0
    pid, started = q.ensure_worker()
    print(f"Started the queue worker (pid {pid}); it writes to {q.queue_dir() / 'worker.log'}." if started else
          f"The queue worker (pid {pid}) starts it after the runs before it.")
    return 0


def _time(t: float | None) -> str:
    if not t:
        return "-"
    if time.time() - t < 20 * 3600:
        return time.strftime("%H:%M:%S", time.localtime(t))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def table(items: list[q.Entry]) -> str:
    """The queue as a text table, in order: position among the waiting runs, id, state, name, ..."""
    rows = [("#", "ID", "STATE", "NAME", "FAMILY", "STEPS", "ADDED", "STARTED", "ENDED", "RUN FOLDER")]
    for e in items:
        pos = q.position(items, e)
        rows.append((str(pos or ""), str(e.id), e.state, e.name, e.family or "-", str(e.steps or "-"),
                     _time(e.added_at), _time(e.started_at), _time(e.ended_at), e.run_dir))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    for e in items:
        if e.message and e.state in ("failed", "interrupted", "stopped"):
            lines.append(f"  entry {e.id}: {e.message}")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    items = q.entries()
    if args.json:
        print(json.dumps([e.to_dict() for e in items], indent=1, ensure_ascii=False))
        return 0
    if not items:
        print(f"The queue is empty ({q.queue_dir()}).")
    else:
        print(table(items))
    info = q.worker_info()
    if info:
        print(f"Worker: running (pid {info['pid']})" + (f"; {info['note']}" if info.get("note") else "") + ".")
    elif q.waiting(items) or any(e.state == "running" for e in items):
        print("Worker: not running. `python -m core queue work` (or adding a run) continues the queue.")
    return 0


def _remove(args: argparse.Namespace) -> int:
    e = q.remove(args.id)
    print(f"Removed entry {e.id} ('{e.name}') from the queue.")
    return 0


def _move(args: argparse.Namespace) -> int:
    new = q.move(args.id, by=-1 if args.up else 1 if args.down else 0, to=args.to)
    print(f"Entry {args.id} is now at position {new} of the waiting runs.")
    return 0


def _stop(args: argparse.Namespace) -> int:
    e = q.stop(args.id)
    print(f"Stop requested for entry {e.id} ('{e.name}'): it saves a resumable state, then the queue goes on.")
    return 0


def _clear(args: argparse.Namespace) -> int:
    gone = q.clear()
    print(f"Dropped {len(gone)} ended entr{'y' if len(gone) == 1 else 'ies'} from the queue.")
    return 0


def _work(args: argparse.Namespace) -> int:
    from .queue_worker import work

    return work()
