"""Progress bars: single periodic lines off a terminal, one bar redrawn in place on one, no count printed twice."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios

import pytest

from pipeline import progress
from pipeline.progress import CountToFiles, Progress, Stages, format_duration, polled, sum_counts

LINE = re.compile(r"^labelling: (\d+)/(\d+) images \((\d+\.\d)%\)(, [\d.,]+ img/s, (eta|done in) \w+)?$")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_lines_are_single_periodic_and_never_repeat_a_count():
    stream, clock = io.StringIO(), FakeClock()
    bar = Progress("labelling", 5000, stream=stream, interval=10.0, clock=clock)
    for seconds, done in [(1, 10), (5, 30), (11, 40), (12, 41), (15, 41), (25, 41), (26, 90), (40, 90), (50, 120)]:
        clock.now = 1000.0 + seconds
        bar.set(done)
    clock.now = 1000.0 + 1600
    bar.set(5000)  # the last count is left to the closing line
    bar.close()
    bar.close()  # closing twice prints nothing more
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # Start; 10 s later (40 images); 26 s (90: more than 10 s after the last line, count moved); 50 s (120 images,
    # 24 s after the last line); the end. At 40 s the count had not moved since the line at 26 s: no line.
    assert [int(LINE.match(line).group(1)) for line in lines] == [0, 40, 90, 120, 5000], lines
    assert lines[0] == "labelling: 0/5000 images (0.0%)"
    assert lines[1] == "labelling: 40/5000 images (0.8%), 3.6 img/s, eta 22m"  # 40 images in 11 s
    assert lines[3] == "labelling: 120/5000 images (2.4%), 2.4 img/s, eta 33m"
    assert lines[-1] == "labelling: 5000/5000 images (100.0%), 3.1 img/s, done in 26m"


def test_counts_only_go_forward_and_stop_at_the_total():
    stream, clock = io.StringIO(), FakeClock()
    bar = Progress("labelling", 10, stream=stream, interval=0.0, clock=clock)
    clock.now += 1
    bar.set(4)
    bar.set(3)  # a measurement that raced a write never moves the bar back
    bar.update(2)
    bar.set(99)  # a retried bundle counted twice
    bar.close()
    assert [int(LINE.match(line).group(1)) for line in stream.getvalue().splitlines()] == [0, 4, 6, 10]


def test_disabled_prints_nothing():
    stream = io.StringIO()
    with Progress("labelling", 10, stream=stream, enabled=False) as bar:
        bar.update(5)
    assert stream.getvalue() == ""


def test_rate_format():
    assert [progress.format_rate(r) for r in (0.0312, 3.125, 42.04, 1994.2)] == ["0.03", "3.1", "42.0", "1,994"]


def test_duration_format():
    assert [format_duration(s) for s in (0, 42, 61, 599, 1560, 3900)] == ["0s", "42s", "1m01s", "9m59s", "26m",
                                                                            "1h05m"]


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: a carriage return goes back to the line's start, text overwrites."""
    lines, line, col = [], [], 0
    for ch in raw:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            line[col:col + 1] = [ch]
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return [x for x in lines if x]


def read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0)[0]:  # everything written so far (the writer has finished)
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode("utf-8")


def test_on_a_terminal_each_stage_is_one_bar_redrawn_in_place():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    stream = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
    try:
        assert progress.is_terminal(stream)
        with Progress("labelling", 5, stream=stream) as bar:
            for _ in range(5):
                bar.update()
        stages = Stages("faiss", progress.FAISS_UNITS, stream=stream)
        for done in (0, 40, 100):
            stages("add", done, 100)
        stages("tune", 1, 1)
        stages.close()
        stream.flush()
        raw = read_all(master).replace("\r\n", "\n")  # the pty's own newline translation
    finally:
        stream.close()
        os.close(master)
    assert "\r" in raw  # redrawn, not appended
    shown = screen(raw)
    assert len(shown) == 3, shown  # one line per stage
    assert shown[0].startswith("labelling: 100%") and "5/5" in shown[0]
    assert shown[1].startswith("faiss add: 100%") and "100/100" in shown[1]
    assert shown[2].startswith("faiss tune: 100%")


def test_polled_takes_a_last_measurement_at_the_end():
    stream = io.StringIO()
    counts = iter([3, 7])

    def measure() -> int:
        return next(counts)

    with polled(Progress("labelling", 7, stream=stream, interval=3600), measure, every=3600):
        pass  # the poller thread never fires within the hour
    assert stream.getvalue().splitlines()[-1].startswith("labelling: 3/7 images")  # the one final measurement


def test_polled_survives_a_failing_measurement():
    stream = io.StringIO()

    def measure() -> int:
        raise FileNotFoundError("listing raced a write")

    with polled(Progress("labelling", 2, stream=stream), measure, every=3600):
        pass
    assert stream.getvalue().splitlines()[-1].startswith("labelling: 0/2 images")


def test_worker_counts_are_summed_by_the_launcher(tmp_path):
    directory = str(tmp_path / "progress")
    workers = [CountToFiles(directory, every=3600.0) for _ in range(3)]
    for fn, n in zip(workers, (4, 0, 9), strict=True):
        fn.setup()
        assert [x for i in range(n) for x in fn.process(i)] == list(range(n))  # elements pass through
        fn.finish_bundle()
    assert sum_counts(directory) == 13
    assert len(list((tmp_path / "progress").iterdir())) == 2  # an instance that saw nothing writes nothing
    progress.remove_counts(directory)
    assert sum_counts(directory) == 0


@pytest.mark.parametrize("path, seconds", [("/tmp/out", 0.5), ("gs://b/out", 10.0)])
def test_poll_interval(path, seconds):
    assert progress.poll_interval(path) == seconds


def test_a_total_learnt_while_running_shows_from_then_on():
    """The labelling job lists its inputs inside the pipeline: its bar starts without a total and gets one."""
    stream, clock = io.StringIO(), FakeClock()
    bar = Progress("labelling", None, stream=stream, interval=10.0, clock=clock)
    clock.now += 11
    bar.set(3)
    bar.set_total(0)  # nothing counted yet: no total
    bar.set_total(40)
    clock.now += 11
    bar.set(10)
    clock.now += 20
    bar.set(40)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "labelling: 0 images" and lines[1].startswith("labelling: 3 images, ")
    assert lines[2].startswith("labelling: 10/40 images (25.0%), ") and "eta" in lines[2]
    assert lines[-1].startswith("labelling: 40/40 images (100.0%), ") and "done in" in lines[-1]
