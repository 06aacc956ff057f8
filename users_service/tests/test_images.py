"""The avatar pipeline on its own: sniffing, bounds, metadata removal, modes and sizes."""

import io
import struct
import zlib

import pytest
from PIL import Image

from users_service.images import (
    ImageKind,
    InvalidImage,
    UnsupportedImageType,
    make_avatar,
    sniff,
)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims another size (what a decompression bomb looks like
    before decoding)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def avatar(data: bytes) -> Image.Image:
    result = make_avatar(data, max_side=1024, max_pixels=40_000_000)
    return Image.open(io.BytesIO(result.data))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n....", ImageKind.png),
        (b"\xff\xd8\xff\xe0....", ImageKind.jpeg),
        (b"GIF89a....", ImageKind.gif),
        (b"GIF87a....", ImageKind.gif),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ImageKind.webp),
    ],
)
def test_sniff_reads_the_bytes(data: bytes, kind: ImageKind) -> None:
    assert sniff(data) is kind


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"BM\x00\x00",  # BMP
        b"II*\x00",  # TIFF
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"%PDF-1.7",
    ],
)
def test_other_types_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImageType):
        make_avatar(data, max_side=1024, max_pixels=40_000_000)


def test_exif_and_gps_do_not_survive_and_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"
    exif[0x0112] = 6  # rotate 90° when displayed
    exif[0x8825] = {1: "N", 2: (55.0, 45.0, 12.0), 3: "E", 4: (37.0, 37.0, 5.0)}
    source = encode(Image.new("RGB", (300, 200), (10, 200, 30)), "JPEG", exif=exif.tobytes())
    assert b"SecretCameraMaker" in source

    result = make_avatar(source, max_side=1024, max_pixels=40_000_000)
    assert b"SecretCameraMaker" not in result.data
    assert b"Exif" not in result.data
    image = Image.open(io.BytesIO(result.data))
    assert not image.getexif()
    assert (image.width, image.height) == (200, 300)
    assert result.extension == "jpg"


def test_png_text_and_icc_do_not_survive() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "home address here")
    source = encode(Image.new("RGBA", (40, 40), (1, 2, 3, 128)), "PNG", pnginfo=info, icc_profile=b"x" * 200)
    result = make_avatar(source, max_side=1024, max_pixels=40_000_000)
    assert b"home address" not in result.data
    assert b"iCCP" not in result.data
    image = Image.open(io.BytesIO(result.data))
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (1, 2, 3, 128)


@pytest.mark.parametrize(("size", "expected"), [((3000, 1500), (1024, 512)), ((500, 2000), (256, 1024))])
def test_downscaled_keeping_aspect_ratio(size: tuple[int, int], expected: tuple[int, int]) -> None:
    image = avatar(encode(Image.new("RGB", size, (255, 0, 0)), "PNG"))
    assert image.size == expected


def test_small_images_are_not_upscaled() -> None:
    assert avatar(encode(Image.new("RGB", (64, 32)), "WEBP")).size == (64, 32)


def test_gif_keeps_its_first_frame_as_png() -> None:
    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    frames = [Image.new("RGB", (20, 20), colour) for colour in (red, green, blue)]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(source)) as check:
        assert getattr(check, "n_frames", 1) == 3  # really an animation of three colours
    result = make_avatar(source, max_side=1024, max_pixels=40_000_000)
    assert result.extension == "png"
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "PNG"
    assert getattr(image, "n_frames", 1) == 1
    assert image.convert("RGB").getpixel((10, 10)) == red


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = avatar(encode(Image.new("CMYK", (30, 30), (0, 255, 255, 0)), "JPEG"))
    assert image.mode == "RGB"


def test_same_image_same_key_digest() -> None:
    source = encode(Image.new("RGB", (50, 50), (5, 6, 7)), "PNG")
    first = make_avatar(source, max_side=1024, max_pixels=40_000_000)
    second = make_avatar(source, max_side=1024, max_pixels=40_000_000)
    assert first.digest == second.digest
    assert len(first.digest) == 64


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_with_size(50_000, 50_000)
    with pytest.raises(InvalidImage):
        make_avatar(bomb, max_side=1024, max_pixels=40_000_000)


def test_pixel_limit_is_a_setting() -> None:
    source = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(InvalidImage):
        make_avatar(source, max_side=1024, max_pixels=9_999)
    make_avatar(source, max_side=1024, max_pixels=10_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_files_are_invalid(fmt: str) -> None:
    source = encode(Image.new("RGB", (200, 200), (9, 9, 9)), fmt)
    with pytest.raises(InvalidImage):
        make_avatar(source[:40], max_side=1024, max_pixels=40_000_000)


def test_garbage_after_a_valid_signature_is_invalid() -> None:
    with pytest.raises(InvalidImage):
        make_avatar(b"\x89PNG\r\n\x1a\n" + b"\x00" * 500, max_side=1024, max_pixels=40_000_000)
