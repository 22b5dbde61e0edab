"""refset.storage and Beam's FileSystems against a real GCS API (the emulator on 127.0.0.1) and local disk.

Every storage guarantee is checked on both back ends with the same test body: round trips, sorted listings that
keep the scheme, atomic writes (all or nothing, no temp leftovers, even under kill -9), stale-listing safety.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from refset import storage
from tests.support.gcs import gcs_emulator, gcs_prefix  # noqa: F401  (pytest fixtures)


@pytest.fixture(params=["local", "gcs"])
def base(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("gcs_prefix")


def _all_files(base: str) -> list[str]:
    fs = storage.filesystem(base)
    return sorted(fs.find(base)) if fs.exists(base) else []


def test_round_trips_keep_scheme_and_sort(base):
    storage.write_json(storage.join(base, "m.json"), {"b": [1, 2], "a": "ü猫"})
    storage.write_bytes(storage.join(base, "d", "b.bin"), b"\x00\x01")
    table = pa.table({"x": pa.array([3, 1, 2], pa.int64()), "s": ["a", "b", "c"]})
    storage.write_parquet(storage.join(base, "d", "a.parquet"), table)

    assert storage.read_json(storage.join(base, "m.json")) == {"b": [1, 2], "a": "ü猫"}
    assert storage.read_bytes(storage.join(base, "d", "b.bin")) == b"\x00\x01"
    assert storage.read_parquet(storage.join(base, "d", "a.parquet")).equals(table)
    assert storage.read_parquet(storage.join(base, "d", "a.parquet"), columns=["s"]).column_names == ["s"]

    expected = [storage.join(base, "d", "a.parquet"), storage.join(base, "d", "b.bin")]
    assert storage.listdir(storage.join(base, "d")) == expected
    assert storage.glob(storage.join(base, "d", "*")) == expected
    assert storage.glob(storage.join(base, "d", "*.parquet")) == expected[:1]
    assert storage.listdir(storage.join(base, "missing")) == []
    assert storage.exists(expected[0]) and not storage.exists(storage.join(base, "d", "c.bin"))
    # What a listing returns can be opened as given (the scheme is kept).
    assert storage.read_bytes(storage.listdir(storage.join(base, "d"))[1]) == b"\x00\x01"


def test_atomic_open_text_mode(base):
    path = storage.join(base, "t.txt")
    with storage.atomic_open(path, "w") as f:
        f.write("ünïcode\n")
    assert storage.read_bytes(path).decode("utf-8") == "ünïcode\n"


def test_failed_atomic_write_leaves_nothing_and_keeps_the_old_file(base):
    path = storage.join(base, "x", "shard.parquet")
    storage.write_bytes(path, b"old")

    with pytest.raises(RuntimeError, match="boom"), storage.atomic_open(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), storage.atomic_open(storage.join(base, "x", "new.parquet")) as f:
        f.write(b"partial")
        raise RuntimeError("boom")

    assert storage.read_bytes(path) == b"old"
    assert not storage.exists(storage.join(base, "x", "new.parquet"))
    assert [p.rsplit("/", 1)[-1] for p in _all_files(base)] == ["shard.parquet"]


def test_remove_temp_files_removes_only_leftovers(base):
    keep = storage.join(base, "segments", "part-00000.parquet")
    storage.write_bytes(keep, b"kept")
    # What an interrupted local writer leaves: a temp-prefixed name next to the target (any depth).
    leftovers = [storage.join(base, "segments", f"{storage.TMP_PREFIX}abc-part-00001.parquet"),
                 storage.join(base, "a", "b", f"{storage.TMP_PREFIX}def-manifest.json")]
    for p in leftovers:
        _put_raw(p, b"partial")

    assert storage.remove_temp_files(base) == 2
    assert storage.remove_temp_files(base) == 0
    assert _all_files(base) == [p.split("://", 1)[-1] for p in [keep]]
    assert storage.remove_temp_files(storage.join(base, "nothing-here")) == 0


def _put_raw(path: str, data: bytes) -> None:
    """Write bypassing storage's atomic layer (to plant leftovers)."""
    fs = storage.filesystem(path)
    if storage.is_local(path):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def test_gcs_listing_sees_objects_written_by_another_client(gcs_emulator, gcs_prefix):  # noqa: F811
    """A commit marker written by another worker must be seen even after this process listed the directory."""
    done = storage.join(gcs_prefix, "done")
    storage.write_bytes(storage.join(done, "part-00000"), b"")
    assert storage.listdir(done) == [storage.join(done, "part-00000")]

    other = gcs_emulator.gcsfs()  # an independent client, as in another process
    other.pipe_file(storage.join(done, "part-00001"), b"")

    assert storage.exists(storage.join(done, "part-00001"))
    assert storage.listdir(done) == [storage.join(done, "part-00000"), storage.join(done, "part-00001")]


def test_gcs_makedirs_does_not_create_a_bucket(gcs_emulator, gcs_prefix):  # noqa: F811
    storage.makedirs(storage.join(gcs_prefix, "out"))  # existing bucket: fine, nothing created
    assert _all_files(gcs_prefix) == []
    with pytest.raises(FileNotFoundError, match="reme-no-such-bucket"):
        storage.makedirs("gs://reme-no-such-bucket/out")
    assert not gcs_emulator.gcsfs().exists("reme-no-such-bucket")


def test_gcs_writes_leave_no_temporary_objects(gcs_prefix):  # noqa: F811
    storage.write_parquet(storage.join(gcs_prefix, "segments", "part-00000.parquet"), pa.table({"x": [1]}))
    with storage.atomic_open(storage.join(gcs_prefix, "manifest.json"), "wb") as f:
        f.write(b"{}")
    names = [p.rsplit("/", 1)[-1] for p in _all_files(gcs_prefix)]
    assert names == ["manifest.json", "part-00000.parquet"]


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_kill_9_during_atomic_write_leaves_no_file(where, tmp_path, request):
    """A writer killed mid-write leaves neither the target nor (on GCS) any object; locally a temp file that
    remove_temp_files clears."""
    if where == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        target_dir = request.getfixturevalue("gcs_prefix")
        env = emulator.subprocess_env()
    else:
        target_dir = str(tmp_path / "out")
        env = None
    target = storage.join(target_dir, "big.bin")
    script = textwrap.dedent(f"""
        import sys
        from refset import storage
        with storage.atomic_open({target!r}) as f:
            f.write(b"x" * (1 << 20))
            f.flush()
            print("half-written", flush=True)
            sys.stdin.read()  # hold the file open until killed
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, cwd=request.config.rootpath)
    try:
        assert proc.stdout.readline().strip() == b"half-written"
        proc.kill()
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -9
    assert not storage.exists(target)
    storage.remove_temp_files(target_dir)
    assert _all_files(target_dir) == []


def test_beam_filesystems_and_storage_share_objects_on_gcs(gcs_prefix):  # noqa: F811
    """Beam's GCS filesystem (google-cloud-storage) and gcsfs see each other's objects, spaces and unicode too."""
    from apache_beam.io.filesystems import FileSystems

    names = ["a.jpg", "b c.jpg", "x ü 猫.png", "a..b.jpg"]
    for i, name in enumerate(names):
        storage.write_bytes(storage.join(gcs_prefix, "imgs", name), bytes([i]) * 10)
    with FileSystems.create(storage.join(gcs_prefix, "imgs", "from-beam.bin")) as f:
        f.write(b"beam")

    matched = FileSystems.match([storage.join(gcs_prefix, "imgs", "*")])[0].metadata_list
    assert sorted(m.path for m in matched) == sorted(storage.join(gcs_prefix, "imgs", n)
                                                     for n in [*names, "from-beam.bin"])
    assert {m.size_in_bytes for m in matched} == {10, 4}
    with FileSystems.open(storage.join(gcs_prefix, "imgs", "x ü 猫.png")) as f:
        assert f.read() == bytes([2]) * 10
    assert storage.read_bytes(storage.join(gcs_prefix, "imgs", "from-beam.bin")) == b"beam"
    assert storage.glob(storage.join(gcs_prefix, "imgs", "*.jpg")) == sorted(
        storage.join(gcs_prefix, "imgs", n) for n in names if n.endswith(".jpg"))
