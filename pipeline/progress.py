"""Progress of long runs: one bar per stage, in place on a terminal, periodic single lines anywhere else.

    labelling: 120/5000 images (2.4%), 3.1 img/s, eta 26m

On a terminal (the stream is a TTY) a stage is one tqdm bar, redrawn in place. Anywhere else (CI logs, the
Dataflow launcher's log, a file) redrawing would leave one carriage-returned line per redraw, so a stage prints
one line when it starts, then at most one line every `interval` seconds and only when its count moved, and one
last line when it ends ("done in ..."). A count is never printed twice.

Counts come from a loop (`update`), or from a poller that measures them where the work happens (`polled`): the
label maps found in the output directory (pipeline.label_job), or the counts that the index job's workers write
under its staging area (`CountToFiles`, below). Measuring outputs instead of asking the runner works the same
on the DirectRunner, with several worker processes, and on Dataflow.

Steps below this package report through a plain callback and never import it: refset.index.build_index calls
`on_progress(stage, done, total)` (`Stages` draws one bar per stage), inference.evaluate.score_predictions calls
`progress(done)`.
"""

from __future__ import annotations

import json
import posixpath
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import apache_beam as beam
from tqdm import tqdm

from refset import storage

DEFAULT_INTERVAL = 30.0  # seconds between two lines when the stream is no terminal


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """42s, 26m, 1h05m: the precision a progress line needs."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 600 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def format_rate(per_second: float) -> str:
    """3.1, 42.0, 1,990: digits that mean something, never an exponent."""
    if per_second >= 100:
        return f"{per_second:,.0f}"
    return f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2f}"


class Progress:
    """One stage's progress bar (see the module docstring). Thread-safe: a poller thread may `set` it."""

    def __init__(self, desc: str, total: int | None, unit: str = "images", rate_unit: str = "img", *,
                 stream=None, interval: float = DEFAULT_INTERVAL, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.unit, self.rate_unit = desc, total, unit, rate_unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.clock = interval, clock
        self.enabled = enabled
        self.done = 0
        self.closed = False
        self.lock = threading.Lock()
        self.terminal = enabled and is_terminal(self.stream)
        self.bar = None
        self.started = clock()
        self.printed_at = self.started
        if not enabled:
            return
        if self.terminal:
            self.bar = tqdm(total=total, desc=desc, unit=rate_unit, file=self.stream, dynamic_ncols=True,
                            leave=True, mininterval=0.2)
        else:
            self._print_line(self._line())

    # --- counts ---------------------------------------------------------------------------------------------
    def set_total(self, total: int | None) -> None:
        """A total learnt while the stage runs (the labelling job lists its inputs inside its pipeline)."""
        with self.lock:
            if self.closed or not total or total == self.total:
                return
            self.total = int(total)
            if self.bar is not None:
                self.bar.total = self.total
                self.bar.refresh()

    def set(self, done: int) -> None:
        """The absolute count so far (counts never go back; one above the total is capped at it)."""
        with self.lock:
            done = max(self.done, min(int(done), self.total) if self.total is not None else int(done))
            if self.closed or done == self.done:
                return
            self.done = done
            if not self.enabled:
                return
            if self.bar is not None:
                self.bar.update(done - self.bar.n)
                return
            now = self.clock()
            # The last count is left to the closing line, which says how long the stage took.
            if now - self.printed_at >= self.interval and done != self.total:
                self._print_line(self._line(now))

    def update(self, n: int = 1) -> None:
        with self.lock:
            done = self.done + n
        self.set(done)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if not self.enabled:
                return
            if self.bar is not None:
                self.bar.close()
                return
            now = self.clock()
            self._print_line(self._line(now, final=True))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- lines when the stream is no terminal ---------------------------------------------------------------
    def _line(self, now: float | None = None, final: bool = False) -> str:
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100.0 * self.done / self.total:.1f}%)"
        else:
            text += f" {self.unit}"
        if now is None:
            return text
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text += f", {format_rate(rate)} {self.rate_unit}/s"
        if final:
            return text + f", done in {format_duration(elapsed)}"
        if self.total and rate > 0:
            text += f", eta {format_duration((self.total - self.done) / rate)}"
        return text

    def _print_line(self, line: str) -> None:
        self.printed_at = self.clock()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: progress is best effort
            pass


@contextmanager
def polled(progress: Progress, measure: Callable[[], int], every: float) -> Iterator[Progress]:
    """Set `progress` from `measure()` every `every` seconds on a thread, once more at the end, then close it.

    A failing measurement (a listing that raced a write) is skipped: progress never stops a run."""

    def take() -> None:
        try:
            progress.set(measure())
        except Exception:  # noqa: BLE001 - best effort, see above
            pass

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            take()

    thread = threading.Thread(target=loop, name=f"progress-{progress.desc}", daemon=True)
    if progress.enabled:
        thread.start()
    try:
        yield progress
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=60)
        if progress.enabled:
            take()
        progress.close()


class Stages:
    """One bar per stage of a step that reports `(stage, done, total)`, e.g. refset.index.build_index's
    `on_progress` ("train", "add", "tune"): a new stage closes the previous stage's bar."""

    def __init__(self, prefix: str, units: dict[str, tuple[str, str]] | None = None, **progress_kwargs):
        self.prefix, self.units, self.kwargs = prefix, units or {}, progress_kwargs
        self.stage: str | None = None
        self.bar: Progress | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            unit, rate_unit = self.units.get(stage, ("steps", "step"))
            self.stage = stage
            self.bar = Progress(f"{self.prefix} {stage}", total, unit, rate_unit, **self.kwargs)
        self.bar.set(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


FAISS_UNITS = {"train": ("steps", "step"), "add": ("vectors", "vec"), "refine": ("vectors", "vec"),
               "tune": ("steps", "step")}


# ---------------------------------------------------------------------------------------------------------
# Counting on the workers (the index job): one small file per DoFn instance, summed by the launcher
# ---------------------------------------------------------------------------------------------------------
class CountToFiles(beam.DoFn):
    """Passes every element through and counts it into `<directory>/<instance>.json` ({"count": n}), rewritten
    at most every `every` seconds and at the end of each bundle, so the launcher can sum the files while the
    pipeline runs, whatever the runner. One file per DoFn instance keeps the files few. A retried bundle may count
    twice; the bar caps the sum at its total."""

    def __init__(self, directory: str, every: float):
        self.directory, self.every = directory, every

    def setup(self):
        self.path = storage.join(self.directory, f"{uuid.uuid4().hex}.json")
        self.count, self.written, self.written_at = 0, 0, 0.0

    def process(self, element):
        self.count += 1
        if time.monotonic() - self.written_at >= self.every:
            self._write()
        yield element

    def finish_bundle(self):
        self._write()

    def _write(self) -> None:
        self.written_at = time.monotonic()
        if self.count == self.written:
            return
        try:
            storage.write_json(self.path, {"count": self.count})
            self.written = self.count
        except Exception:  # noqa: BLE001 - progress never fails the job
            pass


def sum_counts(directory: str) -> int:
    """The sum of the counts `CountToFiles` wrote under `directory` (0 while there are none)."""
    total = 0
    for path in storage.listdir(directory):
        name = posixpath.basename(path)
        if name.endswith(".json") and not name.startswith(storage.TMP_PREFIX):
            try:
                total += int(json.loads(storage.read_bytes(path))["count"])
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue
    return total


def remove_counts(directory: str) -> None:
    if storage.exists(directory):
        storage.filesystem(directory).rm(directory, recursive=True)


def poll_interval(path: str) -> float:
    """How often a launcher measures outputs under `path`: often on a local disk, gently on a bucket."""
    return 10.0 if "://" in path and not path.startswith("file://") else 0.5
