"""Errors the pure stages raise about one input, shared by every layer above.

`BadInput` means the input itself is unusable (corrupt bytes, a label map naming unknown classes, ...): retrying
cannot help, so the jobs record it as a failure of that input and go on. Anything else an input's processing
raises is not the input's fault by this definition (a transient I/O error, or a bug).
"""

from __future__ import annotations


class BadInput(Exception):
    """One input cannot be used; the message says why in one line."""
