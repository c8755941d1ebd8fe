"""Finding image files and decoding them into RGB pixels, safely.

Every failure a user's folder can cause (empty, truncated or mislabelled files,
decompression bombs, unsupported formats, broken links, permissions) comes out as
an `ImageLoadError` with a short reason, never as a Pillow or OS exception.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.errors import (
    ImageLoadError,
    ImageTooLargeError,
    LookalikeError,
    UnsupportedImageError,
)

log = logging.getLogger(__name__)

# A truncated file must fail loudly instead of coming back with a grey lower half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".pgm", ".ppm", ".pbm", ".pnm"}
    | {".tif", ".tiff"}
)

# Image formats Pillow does not read. They are listed by `iter_image_files` too, so
# that an index run reports "unsupported format: HEIC" instead of skipping silently.
UNSUPPORTED_EXTENSIONS = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".svg": "SVG",
    ".svgz": "SVG",
    ".jxl": "JPEG XL",
    ".dng": "camera RAW (DNG)",
    ".cr2": "camera RAW (CR2)",
    ".cr3": "camera RAW (CR3)",
    ".nef": "camera RAW (NEF)",
    ".arw": "camera RAW (ARW)",
}

# ISO base media "ftyp" brands: HEIC/HEIF/AVIF photos, Canon CR3.
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"crx ": "camera RAW (CR3)",
}

_SNIFF_BYTES = 4096
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class LoadLimits:
    """Bounds on what `load_image` decodes.

    max_pixels: width x height from the file header above which the file is refused
        as a decompression bomb, before any pixel is decoded. (Pillow's own guard
        additionally refuses anything above 2 x `PIL.Image.MAX_IMAGE_PIXELS`.)
    max_side: longer side of the returned image; larger images are downscaled,
        keeping the aspect ratio (JPEGs already while decoding, so memory stays small).
    """

    max_pixels: int = 100_000_000
    max_side: int = 2048


DEFAULT_LIMITS = LoadLimits()


def iter_image_files(root: Path) -> Iterator[Path]:
    """Image files under `root` (or `root` itself if it is one), in sorted path order.

    Matches `IMAGE_EXTENSIONS` and `UNSUPPORTED_EXTENSIONS` case-insensitively.
    Hidden files and folders (name starting with ".") are skipped. Symbolic links
    to folders are followed once per real folder, so link loops end; a broken
    link with an image extension is yielded so that loading reports it.
    """
    root = Path(root)
    if root.is_file():
        if _is_image_name(root.name):
            yield root
        return
    if not root.is_dir():
        raise LookalikeError(f"{root}: no such folder")
    yield from _walk(root, {os.path.realpath(root)})


def _is_image_name(name: str) -> bool:
    ext = os.path.splitext(name)[1].lower()
    return ext in IMAGE_EXTENSIONS or ext in UNSUPPORTED_EXTENSIONS


def _walk(folder: Path, visited: set[str]) -> Iterator[Path]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc.strerror or exc)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        if _is_dir(entry):
            real = os.path.realpath(path)
            if real not in visited:
                visited.add(real)
                yield from _walk(path, visited)
        elif _is_image_name(entry.name):
            yield path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:  # a link loop (ELOOP): yielded like a broken link, loading reports it
        return False


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_image(path: str | Path, limits: LoadLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode an image file into an RGB `PIL.Image`, upright and at most `limits.max_side`.

    EXIF orientation is applied, animations give their first frame, and every
    colour mode (grey, 16-bit, palette, CMYK, with or without alpha) becomes RGB;
    transparency is composited on white. Raises `ImageLoadError` (or its
    subclasses `UnsupportedImageError`, `ImageTooLargeError`) for anything else.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageLoadError(path, "broken symbolic link")
    if path.is_dir():
        raise ImageLoadError(path, "is a directory, not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
            if not head:
                raise ImageLoadError(path, "empty file")
            f.seek(0)
            return _decode(path, f, head, limits)
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except OSError as exc:  # I/O errors of the disk itself, not of the image data
        raise ImageLoadError(path, f"cannot read file: {exc.strerror or exc}") from None


def _decode(path: Path, f: BinaryIO, head: bytes, limits: LoadLimits) -> Image.Image:
    try:
        im = Image.open(f)
    except UnidentifiedImageError:
        raise _unidentified(path, head) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(path, f"too large to decode safely: {exc}") from None
    except Exception:  # plugins raise all sorts on a mangled header
        raise ImageLoadError(path, "corrupt image header") from None
    with im:
        width, height = im.size
        if width * height > limits.max_pixels:
            raise ImageTooLargeError(
                path,
                f"too large: {width}x{height} = {width * height:,} pixels, "
                f"limit {limits.max_pixels:,} (decompression bomb?)",
            )
        if width < 1 or height < 1:
            raise ImageLoadError(path, f"image has no pixels ({width}x{height})")
        try:
            if im.format == "JPEG" and max(width, height) > limits.max_side:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the target size.
                scale = limits.max_side / max(width, height)
                im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            im.load()
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(path, f"too large to decode safely: {exc}") from None
        except Exception:  # truncated streams, bad checksums, broken chunks...
            raise ImageLoadError(path, "truncated or corrupt image data") from None
        try:
            upright = ImageOps.exif_transpose(im)
        except Exception:  # a mangled EXIF block: the pixels are fine, keep them as stored
            upright = im.copy()
    try:
        rgb = _to_rgb(upright)
    except ValueError as exc:
        raise UnsupportedImageError(path, f"unsupported colour mode {upright.mode}") from exc
    if max(rgb.size) > limits.max_side:
        rgb.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BICUBIC)
    return rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I"):
        # 16/32-bit grey: scale 0..65535 to 0..255 (a plain convert clips to white).
        values = np.asarray(im, dtype=np.float64) / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _unidentified(path: Path, head: bytes) -> ImageLoadError:
    kind = _sniff_unsupported(head) or UNSUPPORTED_EXTENSIONS.get(path.suffix.lower())
    if kind:
        return UnsupportedImageError(path, f"unsupported format: {kind}")
    if _looks_like_text(head):
        return ImageLoadError(path, "not an image (looks like text/HTML)")
    return ImageLoadError(path, "not an image, or an image format Pillow does not know")


def _sniff_unsupported(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "JPEG XL"
    if head.startswith(b"%PDF"):
        return "PDF"
    if b"<svg" in head[:_SNIFF_BYTES].lower():
        return "SVG"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed block is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text) and all(c.isprintable() or c.isspace() for c in text)
