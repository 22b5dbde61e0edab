"""Test helpers shared across test packages: a local GCS emulator fixture and the bad-input matrix."""
