from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.images import load_image, load_image_bytes, to_rgb
from deepfeat.errors import ImageError
from tests.conftest import photo, png_chunk, png_header_only, save, truncated_jpeg


def test_rgb_jpeg_roundtrip(tmp_path):
    arr = photo(1)
    path = save(Image.fromarray(arr), tmp_path / "a.png")
    img = load_image(path)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), arr)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied(tmp_path, orientation):
    arr = photo(2, (60, 40))  # stored 60 wide, 40 high
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = save(img, tmp_path / "o.jpg", exif=exif, quality=100)
    out = load_image(path)
    if orientation in (6, 8):  # rotated by 90 degrees: displayed 40 wide, 60 high
        assert out.size == (40, 60)
    else:
        assert out.size == (60, 40)
    # orientation 6 means "rotate 90 clockwise to display": compare to numpy's rotation
    stored = np.asarray(Image.open(path).convert("RGB")).astype(int)
    expected = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    np.testing.assert_array_equal(np.asarray(out).astype(int), expected)


def test_grayscale_bilevel_palette_cmyk(tmp_path):
    arr = photo(3)
    gray = Image.fromarray(arr).convert("L")
    for mode in ("L", "1", "P", "CMYK"):
        src = gray if mode == "L" else Image.fromarray(arr).convert(mode)
        ext = "jpg" if mode == "CMYK" else "png"
        out = load_image(save(src, tmp_path / f"{mode}.{ext}"))
        assert out.mode == "RGB" and out.size == src.size
    g = np.asarray(load_image(tmp_path / "L.png"))
    np.testing.assert_array_equal(g[..., 0], np.asarray(gray))
    np.testing.assert_array_equal(g[..., 0], g[..., 2])


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    out = np.asarray(load_image(save(Image.fromarray(rgba), tmp_path / "a.png")))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[9, 9].tolist() == [255, 255, 255]
    la = Image.merge("LA", (Image.fromarray(rgba[..., 0]), Image.fromarray(rgba[..., 3])))
    out_la = np.asarray(load_image(save(la, tmp_path / "la.png")))
    assert out_la[9, 9].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    img.info["transparency"] = 1
    path = save(img, tmp_path / "p.png", transparency=1)
    assert np.asarray(load_image(path))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode, key, colour", [("RGB", (10, 20, 30), (10, 20, 30)), ("L", 7, 7)])
def test_a_transparent_colour_key_is_composited_on_white(tmp_path, mode, key, colour):
    # PNG tRNS on RGB and grey images: the key colour stayed as it was (viewers show it transparent)
    img = Image.new(mode, (4, 4), colour)
    img.putpixel((0, 0), (200, 100, 50) if mode == "RGB" else 99)
    path = save(img, tmp_path / f"key_{mode}.png", transparency=key)
    assert "transparency" in Image.open(path).info
    out = np.asarray(load_image(path))
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == ([200, 100, 50] if mode == "RGB" else [99, 99, 99])


def test_16_bit_scaled_not_clipped(tmp_path):
    arr16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = save(Image.fromarray(arr16), tmp_path / "d16.png")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))[..., 0].astype(int)
    expected = np.rint(arr16 / 257.0).astype(int)
    np.testing.assert_array_equal(out, expected)
    assert out.max() == 255 and out.min() == 0 and len(np.unique(out)) > 200


def test_high_depth_scaling_follows_the_declared_depth_not_the_values(tmp_path):
    # 16-bit data with values 0..255: as a PNG it scaled by 1/257, as a 16-bit PGM it stayed as it was
    dark = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint16)
    png = save(Image.fromarray(dark), tmp_path / "dark.png")
    pgm = tmp_path / "dark.pgm"
    pgm.write_bytes(b"P5\n32 32\n65535\n" + dark.astype(">u2").tobytes())
    expected = np.rint(dark / 257.0).astype(int)
    for path in (png, pgm):
        np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0].astype(int), expected)
    # 32-bit integers declare no range: one value of 256 no longer blackens the image (it divided by 257)
    base = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.int32)
    brighter = base.copy()
    brighter[0, 0] = 256
    a = np.asarray(load_image(save(Image.fromarray(base), tmp_path / "a.tif")))[..., 0].astype(int)
    b = np.asarray(load_image(save(Image.fromarray(brighter), tmp_path / "b.tif")))[..., 0].astype(int)
    np.testing.assert_array_equal(a, base)
    assert np.abs(a - b)[1:].max() <= 1 and b.max() == 255


def test_float_image_in_unit_range():
    img = Image.fromarray(np.full((3, 3), 0.5, dtype=np.float32))
    assert img.mode == "F"
    assert np.asarray(to_rgb(img))[0, 0].tolist() == [128, 128, 128]


def test_multiframe_gif_gives_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = np.asarray(load_image(path))
    assert abs(int(out[0, 0, 0]) - 10) <= 2


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.jpg", b"", "empty file"),
        ("notes.jpg", b"this is text, not pixels", "not an image"),
        ("trunc.jpg", truncated_jpeg(), "truncated"),
        ("bomb.png", png_header_only(30000, 30000), "too large"),
    ],
)
def test_bad_files_raise_image_error_with_path(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert reason in info.value.reason


def test_max_pixels_limit_checked_before_decoding(tmp_path):
    path = save(Image.fromarray(photo(4, (100, 100))), tmp_path / "big.png")
    with pytest.raises(ImageError, match="exceeds the limit of 5000"):
        load_image(path, max_pixels=5000)
    assert load_image(path, max_pixels=10_000).size == (100, 100)


def test_truncated_png(tmp_path):
    path = save(Image.fromarray(photo(5, (200, 200))), tmp_path / "t.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read file"):
        load_image(tmp_path / "nope.jpg")


def test_jpeg_draft_decodes_smaller_but_enough(tmp_path):
    path = save(Image.fromarray(photo(6, (1600, 1200))), tmp_path / "big.jpg", quality=90)
    out = load_image(path, draft=lambda w, h: (w // 5, h // 5))
    assert out.size == (400, 300)  # 1/4 scale: the largest reduction still >= 320x240
    full = load_image(path)
    assert full.size == (1600, 1200)


def test_draft_respects_exif_rotation(tmp_path):
    img = Image.fromarray(photo(7, (1600, 800)))
    exif = img.getexif()
    exif[0x0112] = 6
    path = save(img, tmp_path / "rot.jpg", exif=exif)
    # upright the image is 800 wide x 1600 high; ask for at least 400 x 800 upright
    out = load_image(path, draft=lambda w, h: (w // 2, h // 2))
    assert out.size[0] >= 400 and out.size[1] >= 800
    assert out.size[1] > out.size[0]


def test_max_pixels_above_pillows_limit_is_scoped(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_header_only(10000, 10000))  # 1e8 pixels, above Pillow's own 89.5e6
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=r"100000000 pixels exceeds the limit of 89478485 .*raise"):
        load_image(big)
    with pytest.raises(ImageError) as info:  # now past the size check: the body is not real pixels
        load_image(big, max_pixels=500_000_000)
    assert "truncated or corrupt" in info.value.reason
    assert limit == Image.MAX_IMAGE_PIXELS  # restored for other code


def test_pixel_limit_raised_only_while_needed_and_under_threads(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(Image.fromarray(photo(4, (100, 100))), tmp_path / "p.png")
    with pytest.raises(ImageError, match="exceeds the limit of 5000"):
        load_image(path, max_pixels=5000)
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda m: load_image(path, max_pixels=m).size, [20_000, 10_000, 50_000] * 4))
    assert sizes == [(100, 100)] * 12
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError):  # Pillow's limit outside deepfeat is untouched
        Image.open(path)


def test_a_png_with_damaged_image_data_is_refused_not_garbled(tmp_path):
    import struct

    y, x = np.mgrid[0:60, 0:80]
    path = save(
        Image.fromarray(np.stack([x * 3, y * 4, (x + y) * 2], -1).astype(np.uint8)), tmp_path / "ok.png"
    )
    data = bytearray(path.read_bytes())
    i = data.find(b"IDAT")
    data[i + 4 + struct.unpack(">I", data[i - 4 : i])[0] // 2] ^= 0xFF  # one byte inside the image data
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt PNG data"):
        load_image(bad)  # it decoded with most pixels garbled
    with pytest.raises(ImageError, match="corrupt PNG data"):
        load_image_bytes(bytes(data), "shard.tar:bad.png")
    assert np.asarray(load_image_bytes(path.read_bytes(), "ok")).shape == (60, 80, 3)
    # a bad checksum on an ancillary chunk after the image data (a text note) leaves the pixels intact:
    # accepted, as libpng does
    good = path.read_bytes()
    end = good.rfind(b"IEND") - 4
    text = b"note\x00hello"
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + b"\x00\x00\x00\x00"  # a wrong CRC
    texted = good[:end] + chunk + good[end:]
    np.testing.assert_array_equal(np.asarray(load_image_bytes(texted, "t")), np.asarray(load_image(path)))


@pytest.mark.parametrize("depth", [1, 16])
def test_a_grey_colour_key_of_1_and_16_bit_pngs_is_composited_on_white(tmp_path, depth):
    import struct
    import zlib

    chunk = png_chunk
    # 8 x 8 grey, the top half 0 (the transparent key), the bottom half white (1-bit) or 30000 (16-bit)
    if depth == 1:
        rows = [b"\x00" if y < 4 else b"\xff" for y in range(8)]
    else:
        rows = [struct.pack(">8H", *([0] * 8 if y < 4 else [30000] * 8)) for y in range(8)]
    ihdr = struct.pack(">IIBBBBB", 8, 8, depth, 0, 0, 0, 0)
    raw = zlib.compress(b"".join(b"\x00" + r for r in rows))
    path = tmp_path / f"g{depth}.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tRNS", struct.pack(">H", 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    out = np.asarray(load_image(path))
    assert out[0, 0].tolist() == [255, 255, 255]  # was black
    assert out[-1, -1].tolist() == ([255] * 3 if depth == 1 else [117] * 3)
