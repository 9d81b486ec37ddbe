"""Reading images the way a user's folder holds them: any mode, any orientation, any size."""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from ..errors import UnreadableFileError

if TYPE_CHECKING:
    ImageSource = str | os.PathLike | Image.Image | np.ndarray  # what `load_image` opens

# Extensions treated as images when scanning folders (case-insensitive).
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic", ".heif"}

# Decompression bombs (a 440 KB PNG can hold 12000 x 12000 px): no single image may need more than about
# 1 GB to decode. The pixel count is read from the file's header before anything is decoded:
# * JPEG is decoded reduced (libjpeg's DCT scaling: 1/2, 1/4 or 1/8) to what the caller needs, and never
#   to more than MAX_DECODE_PIXELS, so any JPEG (up to 65535 x 65535) is read in bounded memory;
# * every other format (PNG, HEIC, WebP, TIFF, GIF, BMP) has no reduced decoding in its library here, so it
#   is decoded whole when it has at most MAX_DECODE_PIXELS (80 Mpx: 320 MB as PIL holds it, 4 bytes a
#   pixel) and reduced by an integer factor right after, before any copy; a bigger one is refused with
#   a message naming the file and the limit.
# PIL's own process-wide limit (Image.MAX_IMAGE_PIXELS) is left as the user set it.
MAX_DECODE_PIXELS = 80_000_000
MAX_PIXELS = MAX_DECODE_PIXELS  # the old name
_JPEG_SCALES = (1, 2, 4, 8)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


def is_image_file(path: Path) -> bool:
    """Whether `path` has an image extension (IMAGE_EXTENSIONS) and is not hidden."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(source: ImageSource, max_side: int | None = 2048) -> Image.Image:
    """Open `source` (path, PIL image or array) as an 8-bit RGB PIL image, upright.

    Handles grayscale, palette, CMYK, 16-bit, alpha (composited on white), EXIF rotation and HEIC/HEIF
    (through pillow-heif); images larger than `max_side` are downscaled (keeping aspect ratio) so huge
    photos stay cheap (see MAX_DECODE_PIXELS for what is refused).
    Raises UnreadableFileError naming the file for anything that is not a readable image.
    """
    return _load(source, max_side, exact=True)


def load_image_reduced(source: ImageSource, at_least: int) -> Image.Image:
    """Like `load_image`, but reduced only by an integer factor, as cheaply as the format allows:
    the smallest of the image's 1/1, 1/2, 1/4, 1/8 … reductions whose longer side is still at least
    `at_least` px (JPEG: decoded at that scale; other formats: a box-filter reduce of the decoded image).
    What a detector that resizes its input itself needs (normalised answers do not depend on the scale).
    """
    return _load(source, at_least, exact=False)


def load_image_bytes(data: bytes, name: str, max_side: int | None = 2048) -> Image.Image:
    """`load_image` for the bytes of an uploaded file; errors name `name`."""
    if not data:
        raise UnreadableFileError(name, "the file is empty (0 bytes)")
    image = _load(_Named(io.BytesIO(bytes(data)), name), max_side, exact=True)
    image.filename = name  # messages about this picture name the upload
    return image


class _Named:
    def __init__(self, fp, name: str):
        self.fp, self.name = fp, name


def _load(source, side: int | None, exact: bool) -> Image.Image:
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        image = source
        if isinstance(source, ImageFile.ImageFile) and source.tile:  # opened, not decoded yet: guard it too
            image = _decode(source, name, side)
    elif isinstance(source, np.ndarray):
        return _load(array_to_image(source), side, exact)
    elif isinstance(source, _Named):
        name = source.name
        image = _decode_file(source.fp, name, side)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise UnreadableFileError(path, "the file does not exist")
        if path.is_dir():
            raise UnreadableFileError(path, "this is a folder, not an image file")
        if path.stat().st_size == 0:
            raise UnreadableFileError(path, "the file is empty (0 bytes)")
        with open(path, "rb") as fp:
            image = _decode_file(fp, name, side)
    else:
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(source).__name__}")
    orientation = _orientation(image)
    image = _reduce(image, side)  # in the decoded mode, before any copy or conversion
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    image = _to_rgb(image, name)
    if image is source:
        image = image.copy()  # the caller's own picture is never changed
    if exact and side and max(image.size) > side:
        image.thumbnail((side, side), Image.BILINEAR)
    return image


def _decode_file(fp, name: str, side: int | None) -> Image.Image:
    """Open `fp` (header only), check its pixel count, decode it (reduced where the format allows)."""
    try:
        head = fp.read(32)
        fp.seek(0)
        if head[:3] == b"\xff\xd8\xff":  # JPEG: opened without PIL's global bomb check, judged below
            image = JpegImagePlugin.jpeg_factory(fp, name)
        elif head[:8] == b"\x89PNG\r\n\x1a\n":
            image = PngImagePlugin.PngImageFile(fp, name)
        elif head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
            import pillow_heif

            image = pillow_heif.HeifImageFile(fp)
        else:
            image = Image.open(fp)
    except Image.DecompressionBombError as err:  # PIL's own limit, for the formats opened through it
        raise UnreadableFileError(name, f"the image is too large to decode safely ({err})") from None
    except _DECODE_ERRORS as err:
        text = f"cannot identify image file {name!r}" if isinstance(err, UnidentifiedImageError) else err
        raise UnreadableFileError(name, f"not a readable image ({err.__class__.__name__}: {text})") from None
    return _decode(image, name, side)


def _decode(image: Image.Image, name: str, side: int | None) -> Image.Image:
    width, height = image.size
    if width < 1 or height < 1:
        raise UnreadableFileError(name, f"the image has no pixels ({width}x{height})")
    fmt = image.format or "this"
    try:
        if fmt in ("JPEG", "MPO"):
            scale = next((s for s in _JPEG_SCALES if _ceil(width, s) * _ceil(height, s) <= MAX_DECODE_PIXELS), None)
            if scale is None:
                raise _too_big(name, width, height, fmt)
            if side:
                while scale < 8 and max(_ceil(width, scale * 2), _ceil(height, scale * 2)) >= side:
                    scale *= 2
            if scale > 1:
                image.draft(image.mode if image.mode in ("L", "CMYK") else "RGB",
                            (_ceil(width, scale), _ceil(height, scale)))
        elif width * height > MAX_DECODE_PIXELS:
            raise _too_big(name, width, height, fmt)
        image.load()
    except UnreadableFileError:
        raise
    except Image.DecompressionBombError as err:
        raise UnreadableFileError(name, f"the image is too large to decode safely ({err})") from None
    except _DECODE_ERRORS as err:
        raise UnreadableFileError(name, f"not a readable image ({err.__class__.__name__}: {err})") from None
    return image


def _too_big(name: str, width: int, height: int, fmt: str) -> UnreadableFileError:
    return UnreadableFileError(
        name, f"the image is {width}x{height} px ({width * height / 1e6:.0f} megapixels): at most "
              f"{MAX_DECODE_PIXELS / 1e6:.0f} megapixels of a {fmt} image are decoded (more would take over 1 GB "
              "of memory); save it smaller, or as JPEG, which is read reduced at any size")


def _ceil(n: int, d: int) -> int:
    return -(-n // d)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block must not lose the picture  # noqa: BLE001
        return 1


def _reduce(image: Image.Image, side: int | None) -> Image.Image:
    """`image` reduced by the largest integer factor that keeps its longer side at least `side`."""
    if not side:
        return image
    factor = max(image.size) // side
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except (ValueError, NotImplementedError):  # modes reduce() does not take (P, 1, I;16): resized later
        return image


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples span 0..65535 whatever the picture holds (a dark 16-bit photo stays dark).
        # Mode "I" (32-bit) does not say its depth: values above 255 are taken as 16-bit, else 8-bit.
        arr = np.asarray(image, dtype=np.float64)
        full = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.rint(arr / full * 255.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise UnreadableFileError(name, f"cannot convert image mode {mode} to RGB: {err}") from None


def array_to_image(array: np.ndarray) -> Image.Image:
    """An RGB(A)/grayscale array (H, W[, C]), uint8 or float in [0, 1], as a PIL image."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = arr.clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def source_name(source: ImageSource) -> str:
    """A short human name for a prediction input."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return f"<array {getattr(source, 'shape', '')}>"
