"""Dead-letter rows and the retry rule: every input that cannot be processed becomes one row of `failures/` (SPEC §3).

A failure names the input URI, the stage it failed in (schema.FAILURE_STAGES), the exception type, a one-line
message, and its `kind` (schema.FAILURE_KINDS), so a run over uncurated inputs finishes and says exactly what it
skipped and why:

    transient  an error that may pass if tried again (OSError/IOError of storage and network, timeouts, dropped
               connections, HTTP 408/429/5xx, out of memory), still failing after RetryPolicy.attempts tries
    bad_input  the input itself is unusable (models.errors.BadInput: undecodable bytes, a bomb, an unsafe name;
               a file that does not exist or may not be read): trying again cannot help
    bug        anything else (TypeError, KeyError, ...): our code or a model failed on this input

Transient errors are retried where they happen (`call_with_retries`), up to the policy's attempts, waiting
`backoff_s * 2**k` between tries; the other kinds fail at once. A re-run of the job retries every failed input
again (pipeline.build_index, pipeline.label_job).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from models.errors import BadInput
from refset import schema

FAILURES_TAG = "failures"
MAX_MESSAGE = 500
TRANSIENT, BAD_INPUT, BUG = schema.FAILURE_KINDS

log = logging.getLogger(__name__)
T = TypeVar("T")

_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")
# OSErrors that say the input is not there or not ours to read: no retry can change that.
_NOT_RETRIABLE_OS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# HTTP statuses worth another try (rate limits, server errors, timeouts).
_RETRIABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
# HTTP statuses that say the object is absent or not ours to read (a bad input of the reading stages).
_MISSING_HTTP = frozenset({401, 403, 404, 410})
# Out of memory, as torch reports it on CUDA (torch.cuda.OutOfMemoryError is a RuntimeError) and on CPU.
_TRANSIENT_NAMES = frozenset({"ServiceUnavailable", "TooManyRequests", "InternalServerError", "GatewayTimeout",
                              "DeadlineExceeded", "RetryError", "ProtocolError", "ChunkedEncodingError",
                              "ReadTimeoutError"})
_OOM = re.compile(r"out of memory|can't allocate memory|CUDA error: out of memory", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient errors are retried: `attempts` tries in all (1 = no retry), waiting `backoff_s * 2**k` seconds
    (capped at `max_backoff_s`) after the k-th failed try. The jobs' defaults live in pipeline.config.FailureConfig;
    a handler built without a policy tries once."""

    attempts: int
    backoff_s: float
    max_backoff_s: float

    def delay(self, failed_tries: int) -> float:
        """Seconds to wait after `failed_tries` (>= 1) failed tries."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (failed_tries - 1))


ONE_TRY = RetryPolicy(attempts=1, backoff_s=0.0, max_backoff_s=0.0)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Single line, bounded, and free of object addresses (a re-run must write the very same row)."""
    text = _ADDRESS.sub(r"<\1>", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an error carries: gcsfs' HttpError (.code), google.api_core's (.code), requests' (.response)."""
    for value in (getattr(exc, "code", None), getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(value, int) and 100 <= value < 600:
            return value
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and bool(_OOM.search(str(exc))))


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: I/O errors (but not a missing or forbidden file), timeouts and dropped
    connections, HTTP 408/429/5xx, and running out of memory. Decoding errors are BadInput (models.images wraps
    PIL's OSErrors), so an OSError that reaches here is I/O."""
    if isinstance(exc, BadInput):
        return False
    if is_out_of_memory(exc) or isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    status = _http_status(exc)
    if status is not None:
        return status in _RETRIABLE_HTTP
    if isinstance(exc, OSError):
        return not isinstance(exc, _NOT_RETRIABLE_OS)
    # google.api_core / urllib3 / requests errors without a status: their names say what they are.
    return type(exc).__name__ in _TRANSIENT_NAMES


def classify(exc: BaseException) -> str:
    """The failure kind of an exception raised while processing one input (see the module doc)."""
    if is_transient(exc):
        return TRANSIENT
    if isinstance(exc, (BadInput, *_NOT_RETRIABLE_OS)) or _http_status(exc) in _MISSING_HTTP:
        return BAD_INPUT
    return BUG


def call_with_retries(fn: Callable[[], T], stage: str, policy: RetryPolicy = ONE_TRY,
                      on_retry: Callable[[BaseException], None] | None = None,
                      give_up: Callable[[BaseException], bool] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """fn(), tried again after a transient error (classify) up to `policy.attempts` tries in all, with exponential
    backoff; any other error, or the last transient one, propagates. `on_retry(exc)` runs before each new try
    (e.g. to free cached GPU memory after an out-of-memory error); `give_up(exc)` true propagates a transient
    error at once (a batch that ran out of memory is better split than tried again whole)."""
    failed = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            failed += 1
            if failed >= policy.attempts or not is_transient(exc) or (give_up is not None and give_up(exc)):
                raise
            delay = policy.delay(failed)
            log.info("%s: transient %s (%s); try %d of %d in %.2f s", stage, type(exc).__name__, one_line(exc, 200),
                     failed + 1, policy.attempts, delay)
            if on_retry is not None:
                on_retry(exc)
            if delay > 0:
                sleep(delay)


def failure_row(uri: str, stage: str, exc: BaseException, kind: str | None = None) -> dict:
    if stage not in schema.FAILURE_STAGES:
        raise ValueError(f"unknown failure stage {stage!r}; one of {schema.FAILURE_STAGES}")
    kind = kind or classify(exc)
    if kind not in schema.FAILURE_KINDS:
        raise ValueError(f"unknown failure kind {kind!r}; one of {schema.FAILURE_KINDS}")
    return {"uri": uri, "stage": stage, "error_type": type(exc).__name__, "message": one_line(str(exc) or repr(exc)),
            "kind": kind}
