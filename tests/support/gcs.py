"""A real GCS API on 127.0.0.1 for tests: `gcp-storage-emulator` in a child process.

Both GCS clients the product uses are pointed at it through the environment, so code under test runs unchanged
(in this process and in any subprocess started with `emulator.env`):

- google-cloud-storage (Beam's `gcsio`, i.e. `FileSystems` on gs://) reads `STORAGE_EMULATOR_HOST`. Beam first
  asks google-auth for default credentials and, finding none, retries with backoff for ~30 s per process before
  going anonymous. So `GOOGLE_APPLICATION_CREDENTIALS` names a fake *authorized_user* file holding an unexpired
  token (no refresh, no network; its token_uri is a closed port on 127.0.0.1 in case anything tries), and
  `NO_GCE_CHECK` stops google-auth from probing the GCE metadata server (an address other than 127.0.0.1).
- gcsfs (fsspec, `refset.storage`) also reads `STORAGE_EMULATOR_HOST`; `FSSPEC_GCS_TOKEN=anon` makes it skip
  its credential search (which would also try the metadata server).

Usage in a test module:

    from tests.support.gcs import gcs_emulator, gcs_prefix  # noqa: F401  (pytest fixtures)

    def test_x(gcs_prefix):            # "gs://reme-test/<unique>/", empty, isolated per test
        ...
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

HOST = "127.0.0.1"  # the only address these tests may touch
BUCKET = "reme-test"
_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # Never route loopback requests through an HTTP proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class GcsEmulator:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    env: dict[str, str] = field(default_factory=dict)  # variables that point clients at the emulator

    def url(self, *parts: str) -> str:
        return "gs://" + "/".join([self.bucket, *[p.strip("/") for p in parts if p]])

    def subprocess_env(self) -> dict[str, str]:
        """os.environ plus the emulator variables, for `subprocess.run(..., env=...)`."""
        return {**os.environ, **self.env}

    def gcsfs(self):
        import gcsfs.core

        return gcsfs.core.GCSFileSystem(endpoint_url=self.endpoint, token="anon", skip_instance_cache=True)

    def healthy(self) -> bool:
        try:
            with _no_proxy_opener().open(self.endpoint + "/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


def write_fake_credentials(path: str) -> str:
    """An authorized_user credentials file whose token never needs a refresh; the emulator ignores tokens."""
    info = {
        "type": "authorized_user",
        "client_id": "reme-test",
        "client_secret": "reme-test",
        "refresh_token": "reme-test",
        "token": "reme-test-token",
        "expiry": "2099-01-01T00:00:00Z",
        "token_uri": f"http://{HOST}:9/token",  # discard port on loopback: a refresh fails at once, locally
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return path


def emulator_env(endpoint: str, credentials_file: str) -> dict[str, str]:
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": credentials_file,
        "STORAGE_EMULATOR_HOST": endpoint,
        "FSSPEC_GCS_TOKEN": "anon",
        "NO_GCE_CHECK": "true",  # google-auth and gcsfs both compare with lower-case "true"
        # gcsfs >= 2025.x defaults to ExtendedGcsFileSystem, which asks the gRPC storage-control API for the
        # bucket layout before operations; the emulator has no gRPC endpoint, so every call would wait 60 s.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GOOGLE_CLOUD_PROJECT": "reme-test",
        "NO_PROXY": HOST + ",localhost",
        "no_proxy": HOST + ",localhost",
    }


def _apply_in_process(env: dict[str, str]) -> None:
    """Environment for this process; fsspec read its FSSPEC_* variables at import, so set its config too."""
    import fsspec.config

    os.environ.update(env)
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
    # Both variables are read at import time; this process may have imported the modules already.
    import fsspec
    import gcsfs
    import gcsfs.core
    from google.auth.compute_engine import _metadata

    _metadata._NO_GCE_CHECK = True
    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.core.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[GcsEmulator]:
    """Start the emulator (in memory, 127.0.0.1, a free port) once per session; stop it at the end."""
    port = _free_port()
    endpoint = f"http://{HOST}:{port}"
    workdir = tmp_path_factory.mktemp("gcs-emulator")
    # The emulator's log goes to a file, never to an unread pipe: its single server thread would block on a full
    # pipe buffer and every client would hang.
    log_path = workdir / "emulator.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", f"--host={HOST}", f"--port={port}",
             "--in-memory", f"--default-bucket={BUCKET}", "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    credentials = write_fake_credentials(str(workdir / "credentials.json"))
    emulator = GcsEmulator(endpoint=endpoint, bucket=BUCKET, env=emulator_env(endpoint, credentials))
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not emulator.healthy():  # bounded readiness poll, not a timing sleep
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited: {log_path.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"gcp-storage-emulator did not answer on {endpoint} within {_START_TIMEOUT_S:.0f}s")
        time.sleep(0.05)

    saved = {k: os.environ.get(k) for k in emulator.env}
    import fsspec.config

    saved_conf = {k: dict(fsspec.config.conf.get(k, {})) for k in ("gcs", "gs")}
    _apply_in_process(emulator.env)
    try:
        yield emulator
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in saved_conf.items():
            fsspec.config.conf[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def gcs_prefix(gcs_emulator: GcsEmulator) -> str:
    """A fresh, empty gs:// prefix in the emulator's bucket for one test (no trailing slash)."""
    import gcsfs.core

    gcsfs.core.GCSFileSystem.clear_instance_cache()  # no listings cached from another test
    return gcs_emulator.url(f"t-{uuid.uuid4().hex[:12]}")
