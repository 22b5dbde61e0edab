"""The image decoder over the bad-input matrix: each file decodes to the promised RGB pixels or raises a clear,
input-specific error — never a crash, never an out-of-memory, never silently wrong pixels."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from models.images import ImageDecodeError, decode_image
from tests.support.bad_inputs import check_decoded, write_bad_inputs


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-inputs")
    return directory, write_bad_inputs(directory)


def test_matrix_covers_what_the_issue_lists(matrix):
    _, cases = matrix
    names = {c.name for c in cases}
    assert {"zero-bytes.jpg", "truncated.jpg", "not-an-image.jpg", "cmyk.jpg", "gray16.png", "grayscale.png",
            "rgba.png", "palette-transparent.png", "exif-rotated.jpg", "one-pixel.png", "animated.gif",
            "bomb.png", "with space.jpg", "x ü 猫.png", "a..b.jpg"} <= names
    assert len(names) == len(cases)


def test_each_case_decodes_correctly_or_fails_with_a_reason(matrix):
    directory, cases = matrix
    for case in cases:
        data = (directory / case.name).read_bytes()
        if case.processed:
            check_decoded(case, decode_image(data))
        else:
            with pytest.raises(ImageDecodeError) as info:
                decode_image(data)
            message = str(info.value)
            assert "\n" not in message and message.strip(), case.name
            assert re.search(case.reason, message, re.IGNORECASE), f"{case.name}: {message!r}"


def test_decompression_bomb_is_refused_without_allocating_it(matrix, request):
    """Decoding the 12000x12000 bomb would need ~432 MB for RGB (+144 MB greyscale); refusing it must not move
    peak RSS by more than a few tens of MB. Measured in a fresh process so an earlier peak cannot hide it."""
    directory, _ = matrix
    path = directory / "bomb.png"
    assert path.stat().st_size < 100_000  # small on disk: that is what makes it a bomb
    script = textwrap.dedent(f"""
        import resource
        from models.images import ImageDecodeError, decode_image
        data = open({str(path)!r}, "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_image(data)
            print("DECODED")
        except ImageDecodeError as exc:
            print("REFUSED", exc)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=request.config.rootpath)
    assert result.returncode == 0, result.stderr[-2000:]
    verdict, grown_mb = result.stdout.strip().splitlines()
    assert verdict.startswith("REFUSED") and re.search(r"(?i)bomb|pixel", verdict), verdict
    assert int(grown_mb) < 64, f"refusing the bomb grew peak RSS by {grown_mb} MB"


def test_pixel_limit_is_configurable_both_ways(matrix):
    directory, _ = matrix
    ramp = (directory / "gray16.png").read_bytes()  # 64x48 = 3072 pixels
    with pytest.raises(ImageDecodeError, match=r"(?i)pixel"):
        decode_image(ramp, max_pixels=3071)
    assert decode_image(ramp, max_pixels=3072).shape == (48, 64, 3)


def test_exif_rotation_happens_before_resizing(matrix):
    directory, cases = matrix
    case = next(c for c in cases if c.name == "exif-rotated.jpg")
    small = decode_image((directory / case.name).read_bytes(), max_side=32)
    assert small.shape == (32, 16, 3)  # upright 32x64 scaled by half: still portrait
    assert small[:12, :, 0].mean() > 150 and small[-12:, :, 2].mean() > 150  # red on top, blue below
