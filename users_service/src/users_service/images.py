"""Avatar image checks and re-encoding (pure, blocking: callers run it in a worker thread)."""

import hashlib
import io
import logging
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, ImageOps

from users_service.errors import InvalidImage, UnsupportedImageType

logger = logging.getLogger("users.images")


class ImageKind(StrEnum):
    png = "PNG"
    jpeg = "JPEG"
    gif = "GIF"
    webp = "WEBP"


@dataclass(frozen=True)
class Avatar:
    data: bytes
    extension: str
    content_type: str
    width: int
    height: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sniff(data: bytes) -> ImageKind:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageKind.png
    if data.startswith(b"\xff\xd8\xff"):
        return ImageKind.jpeg
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ImageKind.gif
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageKind.webp
    raise UnsupportedImageType


# What each accepted input becomes. JPEG stays JPEG (photos); the others keep transparency.
_OUTPUT: dict[ImageKind, tuple[str, str, str]] = {
    ImageKind.jpeg: ("JPEG", "jpg", "image/jpeg"),
    ImageKind.png: ("PNG", "png", "image/png"),
    ImageKind.gif: ("PNG", "png", "image/png"),
    ImageKind.webp: ("WEBP", "webp", "image/webp"),
}


def make_avatar(data: bytes, *, max_side: int, max_pixels: int) -> Avatar:
    """Sniff, decode, bound, orient, downscale and re-encode without any metadata.

    Raises UnsupportedImageType (415) or InvalidImage (400). Animated GIF/WebP keep their first
    frame only.
    """
    kind = sniff(data)
    try:
        with Image.open(io.BytesIO(data), formats=[kind.value]) as source:
            width, height = source.size
            # Checked from the header, before any pixel is decoded: a decompression bomb is
            # refused without allocating its pixels.
            if width < 1 or height < 1 or width * height > max_pixels:
                raise InvalidImage
            if kind is ImageKind.jpeg:
                # Lets libjpeg decode at a reduced scale: big photos cost a fraction of the memory.
                source.draft("RGB", (max_side, max_side))
            source.load()
            image = ImageOps.exif_transpose(source)
            image = _normalise_mode(image, kind)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            # A fresh image from raw pixels: no info dict, EXIF, ICC, XMP or text chunk survives.
            clean = Image.frombytes(image.mode, image.size, image.tobytes())
    except (UnsupportedImageType, InvalidImage):
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage from exc
    except Exception as exc:
        # Pillow reports broken files with many exception types (OSError, SyntaxError, ValueError,
        # struct.error...): every one of them is the client's bad file, never a server error.
        logger.info("undecodable avatar", extra={"error": type(exc).__name__})
        raise InvalidImage from exc

    pillow_format, extension, content_type = _OUTPUT[kind]
    buffer = io.BytesIO()
    if pillow_format == "JPEG":
        clean.save(buffer, "JPEG", quality=85, optimize=True)
    elif pillow_format == "WEBP":
        clean.save(buffer, "WEBP", quality=85, method=4)
    else:
        clean.save(buffer, "PNG", optimize=True)
    return Avatar(buffer.getvalue(), extension, content_type, clean.width, clean.height)


def _normalise_mode(image: Image.Image, kind: ImageKind) -> Image.Image:
    if kind is ImageKind.jpeg:
        return image if image.mode in ("L", "RGB") else image.convert("RGB")
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    has_alpha = image.mode in ("PA", "La") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")
