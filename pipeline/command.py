"""How every command line of ours parses, fails and exits (`reme`, `python -m pipeline.build_index`,
`python -m pipeline.faiss_index`).

Two kinds of failure, each one line on stderr as `<prog>: error: <message>`:

    UsageError  exit 2   the command cannot run as called: a bad flag or combination, an input that matches
                         nothing, an output that is not writable, an unusable index or class list, missing weights.
                         Raised before any work, so nothing is created or modified.
    RunFailure  exit 1   the run went ahead and did not succeed as a whole (e.g. more inputs failed than the
                         failure budget allows); its outputs say what was done.

Argument-parser errors are usage errors (exit 2, one line, no usage block).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable

USAGE_EXIT = 2
FAILURE_EXIT = 1


def one_line(message: object) -> str:
    return " ".join(str(message).split())


class CommandError(Exception):
    """An ending of a command with a one-line message; `prog` names the (sub)command when it should say more than
    the program's name (e.g. "reme label")."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(one_line(message))
        self.prog = prog


class UsageError(CommandError):
    """The command cannot run as called; the message is one line naming the problem and, where there is one, the
    fix."""


class RunFailure(CommandError):
    """The run finished or stopped without succeeding as a whole; the message is a one-line summary."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), without the usage block."""

    def error(self, message: str) -> None:
        self.exit(USAGE_EXIT, f"{self.prog}: error: {one_line(message)}\n")




def weights_error_of(exc: BaseException) -> str | None:
    """A worker that could not load a model fails the pipeline with Beam's wrapping: find the models layer's line."""
    text = str(exc)
    if "WeightsUnavailable" not in text:
        return None
    line = next((ln for ln in text.splitlines() if "WeightsUnavailable" in ln), text)
    return line.split("WeightsUnavailable:", 1)[-1].strip()


def exit_code_of(exc: BaseException) -> tuple[int, str | None]:
    """(exit status, one-line message or None) for an exception that ends a command."""
    if isinstance(exc, UsageError):
        return USAGE_EXIT, one_line(exc)
    if isinstance(exc, RunFailure):
        return FAILURE_EXIT, one_line(exc)
    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0), None
        return FAILURE_EXIT, one_line(exc.code)
    return FAILURE_EXIT, None


def report(exc: CommandError, prog: str) -> int:
    """Print a command's ending as its one line on stderr; returns the exit status it calls for."""
    code, message = exit_code_of(exc)
    print(f"{exc.prog or prog}: error: {message}", file=sys.stderr)
    return code


def run_command(main: Callable[[], int | None], prog: str) -> None:
    """Run a command-line entry point, print its failure as one line, then end the process without interpreter
    teardown.

    Torch, faiss, pyarrow and grpc each keep native thread pools; tearing them down in interpreter finalisation
    occasionally aborted a run that had already finished, or already printed its one-line error, on a loaded
    machine ("terminate called without an active exception", exit -6). By the time `main` returns or raises,
    outputs are committed and messages printed, so flush and leave directly, with the status Python would give.
    """
    try:
        code = main() or 0
    except BaseException as exc:  # noqa: BLE001 - this is the process boundary: every ending is reported here
        if isinstance(exc, CommandError):
            code = report(exc, prog)
        else:
            code, message = exit_code_of(exc)
            if message is not None:
                print(f"{prog}: error: {message}", file=sys.stderr)
            elif not isinstance(exc, SystemExit):
                traceback.print_exc()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))
