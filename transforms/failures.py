"""Dead-letter rows: every input that cannot be processed becomes one row of `failures/` (SPEC §3).

A failure names the input URI, the stage it failed in (schema.FAILURE_STAGES), the exception type and a one-line
message, so a run over uncurated inputs finishes and says exactly what it skipped and why.
"""

from __future__ import annotations

import re

from refset import schema

FAILURES_TAG = "failures"
MAX_MESSAGE = 500


_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Single line, bounded, and free of object addresses (a re-run must write the very same row)."""
    text = _ADDRESS.sub(r"<\1>", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_row(uri: str, stage: str, exc: BaseException) -> dict:
    if stage not in schema.FAILURE_STAGES:
        raise ValueError(f"unknown failure stage {stage!r}; one of {schema.FAILURE_STAGES}")
    return {"uri": uri, "stage": stage, "error_type": type(exc).__name__, "message": one_line(str(exc) or repr(exc))}
