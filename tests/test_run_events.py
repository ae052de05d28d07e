"""core/runs/events.py: events.jsonl read as it grows, and a run folder whose events file was replaced."""
from __future__ import annotations

import json

from core.runs.events import EventLog, tail_events


def test_tail_events_waits_for_a_half_written_line(tmp_path):
    f = tmp_path / "events.jsonl"
    a = json.dumps({"type": "start", "time": 1}) + "\n"
    b = json.dumps({"type": "step", "step": 1, "time": 2})
    f.write_text(a + b[:10])
    events, off = tail_events(f, 0)
    assert [e["type"] for e in events] == ["start"]
    assert off == len(a.encode())
    assert tail_events(f, off) == ([], off)  # still half a line
    with open(f, "a") as fh:
        fh.write(b[10:] + "\n" + "not json\n" + "[1, 2]\n")
    events, off2 = tail_events(f, off)
    assert [e.get("step") for e in events] == [1]  # garbage lines skipped, not fatal
    assert off2 == f.stat().st_size


def test_tail_events_missing_and_shrunk_files(tmp_path):
    f = tmp_path / "events.jsonl"
    assert tail_events(f, 0) == ([], 0)
    f.write_text('{"type": "start", "time": 1}\n')
    events, off = tail_events(f, 10_000)  # the file was replaced by a shorter one
    assert len(events) == 1 and off == f.stat().st_size


# ------------------------------------------------------------------ status


def test_a_run_started_again_is_seen_even_when_its_file_keeps_the_inode(tmp_path):
    """A new events.jsonl can get the inode number of the one it replaced, and soon outgrows it: the reader
    still sees the new attempt (its first bytes differ), not the old one's end."""
    f = tmp_path / "events.jsonl"
    old = [{"type": "start", "time": 1.0, "pid": 1}, {"type": "end", "time": 2.0, "status": "failed", "exit_code": 2}]
    f.write_text("".join(json.dumps(e) + "\n" for e in old))
    log = EventLog(f)
    log.update()
    assert log.end["status"] == "failed"
    ino = f.stat().st_ino
    new = [{"type": "start", "time": 5.0, "pid": 2}] + [{"type": "step", "time": 5.0 + i, "step": i,
                                                         "loss": 0.1} for i in range(1, 6)]
    with open(f, "w") as out:  # the same inode, rewritten longer than what was read
        out.write("".join(json.dumps(e) + "\n" for e in new))
    assert f.stat().st_ino == ino
    log.update()
    assert log.end is None and log.last_start["pid"] == 2 and log.last_step["step"] == 5
