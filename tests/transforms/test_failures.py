"""The failure rule: kinds, retries of transient errors with exponential backoff (no real sleeping: the backoff is
recorded, or zero), per-image isolation in batches, and reads that are tried again."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from models.images import ImageDecodeError
from pipeline.command import RunFailure
from pipeline.config import FailureConfig
from transforms.failures import RetryPolicy, call_with_retries, classify, failure_row
from transforms.handlers import apply_isolated
from transforms.images import DecodeImage

NO_WAIT = RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=0.0)


class HttpError(Exception):
    """Shaped like gcsfs' and google.api_core's HTTP errors: a status in `.code`."""

    def __init__(self, code: int):
        super().__init__(f"HTTP {code}")
        self.code = code


@pytest.mark.parametrize(("exc", "kind"), [
    (OSError("connection reset by peer"), "transient"),
    (TimeoutError("read timed out"), "transient"),
    (ConnectionError("refused"), "transient"),
    (HttpError(503), "transient"),
    (HttpError(429), "transient"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "transient"),
    (MemoryError(), "transient"),
    (FileNotFoundError("gone"), "bad_input"),
    (PermissionError("denied"), "bad_input"),
    (HttpError(404), "bad_input"),
    (ImageDecodeError("cannot decode image"), "bad_input"),
    (TypeError("unsupported operand"), "bug"),
    (KeyError("visual"), "bug"),
    (RuntimeError("shape mismatch"), "bug"),
])
def test_failures_are_classified(exc, kind):
    assert classify(exc) == kind
    assert failure_row("/a.jpg", "embed", exc)["kind"] == kind


def test_transient_error_is_retried_with_exponential_backoff():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("flaky disk")
        return "bytes"

    policy = RetryPolicy(attempts=4, backoff_s=0.5, max_backoff_s=0.75)
    assert call_with_retries(flaky, "read", policy, sleep=waits.append) == "bytes"
    assert len(calls) == 3 and waits == [0.5, 0.75]  # 0.5, then 1.0 capped at 0.75


def test_retries_are_bounded_and_other_errors_are_not_retried():
    calls = []

    def always(exc):
        def fn():
            calls.append(1)
            raise exc
        return fn

    with pytest.raises(OSError):
        call_with_retries(always(OSError("down")), "read", NO_WAIT)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(TypeError):
        call_with_retries(always(TypeError("bug")), "read", NO_WAIT)
    assert len(calls) == 1


def test_an_encoder_that_raises_on_one_image_fails_that_image_as_a_bug():
    items = [{"uri": f"/img{i}.jpg"} for i in range(4)]

    def encode(batch):
        if any(item["uri"] == "/img2.jpg" for item in batch):
            raise TypeError("unsupported operand type(s)")
        for item in batch:
            item["visual"] = 1

    apply_isolated(items, "embed", encode, NO_WAIT)
    failed = [item for item in items if item.get("failure")]
    assert [item["uri"] for item in failed] == ["/img2.jpg"]
    assert failed[0]["failure"]["kind"] == "bug" and failed[0]["failure"]["stage"] == "embed"
    assert all(item.get("visual") == 1 for item in items if item["uri"] != "/img2.jpg")


def test_a_batch_that_runs_out_of_memory_is_split_at_once_and_each_image_retried():
    sizes = []
    oom_once = {"/img1.jpg"}

    def encode(batch):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise RuntimeError("CUDA out of memory")
        if batch[0]["uri"] in oom_once:  # the single image runs out once, then fits
            oom_once.discard(batch[0]["uri"])
            raise RuntimeError("CUDA out of memory")
        batch[0]["visual"] = 1

    items = [{"uri": f"/img{i}.jpg"} for i in range(3)]
    apply_isolated(items, "embed", encode, NO_WAIT)
    assert sizes == [3, 1, 1, 1, 1]  # the batch once (not retried whole), then each image, /img1 twice
    assert all(item.get("visual") == 1 and not item.get("failure") for item in items)


def test_a_transient_error_that_persists_is_a_transient_failure():
    items = [{"uri": "/img0.jpg"}]

    def down(batch):
        raise ConnectionError("storage unreachable")

    apply_isolated(items, "embed", down, NO_WAIT)
    assert items[0]["failure"]["kind"] == "transient" and items[0]["failure"]["error_type"] == "ConnectionError"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class FlakyReadable:
    """A ReadableFile whose read() fails `failures` times with a transient error, then returns the bytes."""

    def __init__(self, path: str, data: bytes, failures: int):
        self.metadata = SimpleNamespace(path=path)
        self.data, self.failures, self.reads = data, failures, 0

    def read(self):
        self.reads += 1
        if self.reads <= self.failures:
            raise OSError("503 backend error")
        return self.data


def test_a_reader_that_fails_twice_then_succeeds_gives_the_image_and_no_failure():
    readable = FlakyReadable("/in/a.png", _png(), failures=2)
    (item,) = DecodeImage(1, retry=NO_WAIT).process(readable)
    assert item["failure"] is None and item["image"].shape == (6, 8, 3) and readable.reads == 3


def test_a_reader_that_keeps_failing_is_a_transient_read_failure():
    readable = FlakyReadable("/in/a.png", _png(), failures=5)
    (item,) = DecodeImage(1, retry=NO_WAIT).process(readable)
    assert readable.reads == 3
    assert (item["failure"]["stage"], item["failure"]["kind"]) == ("read", "transient")


def test_undecodable_bytes_are_a_bad_input_and_not_retried():
    readable = FlakyReadable("/in/a.jpg", b"not a jpeg", failures=0)
    (item,) = DecodeImage(1, retry=NO_WAIT).process(readable)
    assert readable.reads == 1
    assert (item["failure"]["stage"], item["failure"]["kind"]) == ("decode", "bad_input")


def test_failure_budget():
    budget = FailureConfig(max_failure_rate=0.25)
    budget.check(1, 4, {"bad_input": 1}, "out/failures")  # 25 %: within
    budget.check(0, 0, {}, "out/failures")
    with pytest.raises(RunFailure, match=r"2 of 4 images failed \(50.0%.*1 bad_input, 1 bug"):
        budget.check(2, 4, {"bad_input": 1, "bug": 1}, "out/failures")
    with pytest.raises(RunFailure, match="3 of 3 images failed"):  # everything failed: never a success
        FailureConfig(max_failure_rate=1.0).check(3, 3, {"transient": 3}, "out/failures")
