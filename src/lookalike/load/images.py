"""Finding image files and decoding them into RGB pixels, safely.

Every failure a user's folder can cause (empty, truncated or mislabelled files,
decompression bombs, unsupported formats, broken links, permissions, FIFOs and
devices) comes out as an `ImageLoadError` with a short reason, never as a Pillow or
OS exception. Only the Pillow plugins of `ALLOWED_FORMATS` ever parse a file, and a
decode never holds more than the decoded pixels plus one strip of them in another
mode; at most `decode_slots.limit` decodes run at once in a process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from lookalike.errors import (
    ImageLoadError,
    ImageTooLargeError,
    LookalikeError,
    UnsupportedImageError,
)
from lookalike.load.names import safe_display

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

# The only Pillow plugins that may parse a file: those of the image extensions above.
# Others stay unreachable even for a file named .jpg or uploaded as image/png (EPS runs
# Ghostscript; PSD, PDF, ... are not what a folder of pictures is for). MPO (phone JPEGs)
# comes from the JPEG plugin.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "PPM", "TIFF")
_DRAFT_FORMATS = ("JPEG", "MPO")  # libjpeg can decode these at 1/2, 1/4 or 1/8 scale

# Pixels converted at once: a big 16-bit or RGBA image is turned into RGB in strips of
# this many pixels, each reduced at once, so no full-size copy in another mode is made.
_STRIP_PIXELS = 1 << 20

_SPECIAL_FILES = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)

# EXIF orientation -> the transposition that shows the image upright (as ImageOps does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
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


class DecodeSlots:
    """At most `limit` decodes at once in this process (each can need hundreds of MB).

    `load_image` takes a slot; a caller (the web server) may hold one around more work
    with `with decode_slots:`, and the `load_image` inside then uses the same slot.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._held = threading.local()  # how deep this thread is in `with`

    def __enter__(self) -> DecodeSlots:
        depth = getattr(self._held, "depth", 0)
        if depth == 0:
            self._free.acquire()
        self._held.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._held.depth -= 1
        if self._held.depth == 0:
            self._free.release()


# As many as the indexer's decode threads (min(4, cores)), so indexing is never throttled.
decode_slots = DecodeSlots(max(2, min(4, os.cpu_count() or 1)))


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
        log.warning("cannot list %s: %s", safe_display(folder), exc.strerror or exc)
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
    with _open_regular(Path(path)) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_image(path: str | Path, limits: LoadLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode an image file into an RGB `PIL.Image`, upright and at most `limits.max_side`.

    EXIF orientation is applied, animations give their first frame, and every
    colour mode (grey, 16-bit, palette, CMYK, with or without alpha) becomes RGB;
    transparency is composited on white. Raises `ImageLoadError` (or its
    subclasses `UnsupportedImageError`, `ImageTooLargeError`) for anything else.
    Waits for one of the `decode_slots`.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageLoadError(path, "broken symbolic link")
    with decode_slots, _open_regular(path) as f:
        head = f.read(_SNIFF_BYTES)
        if not head:
            raise ImageLoadError(path, "empty file")
        f.seek(0)
        return _decode(path, f, head, limits)


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for reading if it is a regular file (or a link to one).

    A FIFO, socket or device is refused before it is opened: opening a FIFO waits for a
    writer forever, and a device may do anything on open. It is checked again on the
    open file, which cannot block (O_NONBLOCK), in case the name was swapped meanwhile.
    """
    try:
        _require_regular(path, os.stat(path))
        with open(path, "rb", opener=_open_nonblocking) as f:
            _require_regular(path, os.fstat(f.fileno()))
            os.set_blocking(f.fileno(), True)
            yield f
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except OSError as exc:  # I/O errors of the disk itself, not of the image data
        raise ImageLoadError(path, f"cannot read file: {exc.strerror or exc}") from None


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


def _require_regular(path: Path, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(path, "is a directory, not a file")
    kind = next((name for is_kind, name in _SPECIAL_FILES if is_kind(st.st_mode)), "special")
    raise ImageLoadError(path, f"not a regular file ({kind})")


def _decode(path: Path, f: BinaryIO, head: bytes, limits: LoadLimits) -> Image.Image:
    try:
        im = Image.open(f, formats=ALLOWED_FORMATS)
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
            if im.format in _DRAFT_FORMATS and max(width, height) > limits.max_side:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the target size.
                scale = limits.max_side / max(width, height)
                im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            im.load()
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(path, f"too large to decode safely: {exc}") from None
        except Exception:  # truncated streams, bad checksums, broken chunks...
            raise ImageLoadError(path, "truncated or corrupt image data") from None
        try:
            rgb = _rgb_reduced(im, max(1, max(im.size) // limits.max_side))
        except ValueError as exc:
            raise UnsupportedImageError(path, f"unsupported colour mode {im.mode}") from exc
        turn = _upright_turn(im)
    if max(rgb.size) > limits.max_side:  # the longer side is the same turned or not
        rgb.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BICUBIC)
    return rgb.transpose(turn) if turn is not None else rgb


def _rgb_reduced(im: Image.Image, factor: int) -> Image.Image:
    """`im` as RGB at 1/`factor` of its size (box filter), converted strip by strip.

    Strips are a multiple of `factor` rows high, so the result equals reducing the
    whole image; only one strip at a time exists in another mode or at full size.
    """
    rows = max(factor, _STRIP_PIXELS // im.width // factor * factor)
    if rows >= im.height:
        return _rgb_strip(im, 0, im.height, factor)
    out = Image.new("RGB", (-(-im.width // factor), -(-im.height // factor)))
    for top in range(0, im.height, rows):
        out.paste(_rgb_strip(im, top, rows, factor), (0, top // factor))
    return out


def _rgb_strip(im: Image.Image, top: int, rows: int, factor: int) -> Image.Image:
    # crop copies (with the palette and transparency): the result outlives the file's image.
    rgb = _to_rgb(im.crop((0, top, im.width, min(top + rows, im.height))))
    return rgb.reduce(factor) if factor > 1 else rgb


def _upright_turn(im: Image.Image) -> Image.Transpose | None:
    """The transposition that shows `im` upright by its EXIF (or XMP) orientation."""
    try:
        return _UPRIGHT.get(im.getexif().get(ExifTags.Base.Orientation))
    except Exception:  # a mangled EXIF block: the pixels are fine, keep them as stored
        return None


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
    kind = (
        _sniff_unsupported(head)
        or _refused_pillow_format(head)
        or UNSUPPORTED_EXTENSIONS.get(path.suffix.lower())
    )
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


def _refused_pillow_format(head: bytes) -> str | None:
    """The format outside `ALLOWED_FORMATS` whose signature `head` starts with.

    Only the plugins' signature checks run (a comparison of the first 16 bytes, what
    `Image.open` gives them too), never their parsers.
    """
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if accept is None or name in ALLOWED_FORMATS:
            continue
        try:
            if accept(head[:16]):
                return name
        except Exception:  # a signature check that trips over a short head is no match
            continue
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
