"""Generated test worlds (see tests/worlds/hard.py)."""
