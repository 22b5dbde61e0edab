"""Run a benchmark in a child process with a time limit, forwarding the JSON lines it prints.

One crashing or hanging benchmark then costs only its own figures: the caller records a status line and goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ChildResult:
    rc: int
    lines: int  # JSON objects forwarded
    seconds: float
    stderr_tail: str
    timed_out: bool


def run_json_child(cmd: list[str], limit: float, sink, env: dict | None = None, tag: dict | None = None,
                   echo_other: bool = True) -> ChildResult:
    """Run `cmd` (killed after `limit` s); each JSON-object line of its stdout goes to `sink` (with `tag` defaults).

    Other stdout lines are echoed to stderr (unless `echo_other` is False); the child's stderr is drained concurrently (so it can never block on a
    full pipe) and its tail kept for the status line.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, bufsize=1, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err_tail: list[str] = []

    def drain_stderr() -> None:
        for line in proc.stderr:
            err_tail.append(line)
            del err_tail[:-30]

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(limit, proc.kill)  # this child only, by its own handle
    timer.start()
    lines = 0
    try:
        for line in proc.stdout:
            line = line.strip()
            try:
                row = json.loads(line) if line.startswith("{") else None
            except ValueError:
                row = None
            if not isinstance(row, dict):
                if line and echo_other:
                    print(line, file=sys.stderr)
                continue
            for key, value in (tag or {}).items():
                row.setdefault(key, value)
            sink(row)
            lines += 1
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    seconds = time.perf_counter() - t0
    return ChildResult(rc=rc, lines=lines, seconds=seconds, stderr_tail="".join(err_tail)[-1500:],
                       timed_out=rc != 0 and seconds >= limit - 1)
