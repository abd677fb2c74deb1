"""Every kind of file a real photo folder holds: read correctly, or skipped and reported."""

import struct
import zlib

import numpy as np
import pytest
from helpers import pixels, write_image
from PIL import Image

from catdog_lightning.data.decode import decode_image, decode_many


def png_header_only(path, width, height):
    """A tiny PNG whose header claims width x height pixels: a decompression bomb."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_rgb_jpeg_decodes_to_size_and_colour(tmp_path):
    path = write_image(tmp_path / "a.jpg", colour=(200, 40, 40), size=(500, 375))
    out = decode_image(path, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (200, 40, 40)).max() <= 3


def test_draft_and_full_decode_agree_on_a_photo_like_image(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (15, 20, 3)), np.ones((25, 25, 1))).astype(np.uint8)
    path = tmp_path / "p.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    fast, full = decode_image(path, 64, draft=True), decode_image(path, 64, draft=False)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 4


def test_png_with_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))
    img.save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png", 10)
    assert tuple(out[5, 5]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK"])
def test_grayscale_palette_and_cmyk_become_rgb(tmp_path, mode):
    path = write_image(tmp_path / "x.jpg" if mode != "P" else tmp_path / "x.png", colour=(90, 90, 90), mode=mode)
    out = decode_image(path, 16)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - 90).max() <= 6


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    path = write_image(tmp_path / "c.jpg", colour=(220, 30, 30), mode="CMYK")
    assert Image.open(path).mode == "CMYK"
    r, g, b = decode_image(path, 8)[4, 4]
    assert r > 180 and g < 80 and b < 80


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = decode_image(tmp_path / "g16.png", 8)
    assert abs(int(out[0, 0, 0]) - 127) <= 1


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": left becomes top
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "r.jpg", 20)
    top, bottom = out[2, 10], out[17, 10]
    assert top[0] > 200 and top[2] < 60, "the stored left half must show on top"
    assert bottom[2] > 200 and bottom[0] < 60


def test_tiny_and_very_wide_images(tmp_path):
    assert decode_image(write_image(tmp_path / "one.png", size=(1, 1)), 64).shape == (64, 64, 3)
    assert decode_image(write_image(tmp_path / "wide.jpg", size=(6000, 4)), 64).shape == (64, 64, 3)


def test_unicode_and_uppercase_names(tmp_path):
    path = write_image(tmp_path / "Kätzchen_猫.JPEG")
    assert decode_image(path, 8).shape == (8, 8, 3)


def test_bad_files_are_reported_and_the_rest_kept(tmp_path):
    good = [write_image(tmp_path / f"good{i}.jpg", colour=(i * 40, 0, 0)) for i in range(3)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture")
    whole = tmp_path / "whole.jpg"
    Image.fromarray(pixels(1, (200, 200))).save(whole)
    (tmp_path / "truncated.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    png_header_only(tmp_path / "bomb.png", 40000, 40000)
    (tmp_path / "missing.jpg").symlink_to(tmp_path / "nowhere.jpg")
    order = [
        good[0],
        tmp_path / "empty.jpg",
        tmp_path / "text.jpg",
        good[1],
        tmp_path / "truncated.jpg",
        tmp_path / "bomb.png",
        tmp_path / "missing.jpg",
        good[2],
    ]
    images, kept, failures = decode_many([str(p) for p in order], 16, workers=1)
    assert kept == [0, 3, 7]
    assert images.shape == (3, 3, 16, 16)
    assert [int(images[i, 0, 8, 8]) for i in range(3)] == pytest.approx([0, 40, 80], abs=3)
    reasons = {f.path.rsplit("/", 1)[-1]: f.reason for f in failures}
    assert set(reasons) == {"empty.jpg", "text.jpg", "truncated.jpg", "bomb.png", "missing.jpg"}
    assert "DecompressionBomb" in reasons["bomb.png"]
    assert "truncated" in reasons["truncated.jpg"]


def test_parallel_decode_matches_serial(tmp_path):
    paths = []
    for i in range(150):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(pixels(i, (50, 40))).save(path)
        paths.append(str(path))
    serial = decode_many(paths, 16, workers=1)
    parallel = decode_many(paths, 16, workers=2)
    assert np.array_equal(serial[0], parallel[0]) and serial[1] == parallel[1] == list(range(150))
