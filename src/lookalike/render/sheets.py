"""Contact sheets: a query and its look-alikes side by side, as in the article's figures.

A strip is the query tile, a separator, then one tile per result. Each tile shows the image
fitted into a square, its head box (solid green when a detector found the head, dashed
orange when the box is a fallback), and two caption lines: the file name and the score.

The sheet's format follows the file name's extension. A new file is written atomically;
an existing regular file (or a link to one) is written into, so its links, owner and
permissions stay; anything else (a folder, a FIFO, a device) is refused, never replaced.
"""

from __future__ import annotations

import io
import itertools
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lookalike.errors import ImageLoadError, LookalikeError
from lookalike.fileio import atomic_write_bytes
from lookalike.load.images import load_image
from lookalike.load.names import safe_display

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

PAPER: RGB = (250, 250, 250)
INK: RGB = (30, 30, 30)
MUTED: RGB = (110, 110, 110)
UNREADABLE: RGB = (160, 160, 160)
SEPARATOR: RGB = (200, 40, 40)
DETECTED_BOX: RGB = (0, 200, 80)
FALLBACK_BOX: RGB = (255, 140, 0)
SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class SheetError(LookalikeError):
    """The contact sheet cannot be written where the user asked."""


@dataclass(frozen=True)
class SheetItem:
    """One tile. `head_box` is x0, y0, x1, y1 in the pixels of the image as `load_image`
    returns it (upright, original size unless it exceeded the loader's `max_side`)."""

    image_path: Path
    caption: str
    score: float | None = None
    head_box: Box | None = None
    fallback: bool = False
    note: str | None = None  # the second caption line, in place of "query" or the score


@dataclass
class WrittenSheet:
    """Where a sheet went, and the tiles drawn grey: (image path, why it could not be read)."""

    path: Path
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """Sizes of one strip, all derived from the tile size so every sheet looks alike."""

    tile: int

    @property
    def margin(self) -> int:
        return max(6, self.tile // 16)

    @property
    def gap(self) -> int:
        return max(3, self.margin // 2)

    @property
    def separator(self) -> int:
        """Room between the query and the first result, with a rule in its middle."""
        return 3 * self.margin

    @property
    def font_size(self) -> int:
        return max(10, self.tile // 16)

    @property
    def caption_height(self) -> int:
        return 2 * round(self.font_size * 1.3)

    def tile_x(self, index: int) -> int:
        """Left edge of tile `index` (0 is the query) within the strip."""
        if index == 0:
            return self.margin
        return self.margin + self.tile + self.separator + (index - 1) * (self.tile + self.gap)

    def strip_size(self, n_results: int) -> tuple[int, int]:
        width = self.tile_x(n_results) + self.tile + self.margin
        return width, 2 * self.margin + self.tile + self.caption_height


def contact_sheet(
    query: SheetItem, results: Sequence[SheetItem], out_path: Path, tile: int = 256
) -> WrittenSheet:
    """Write one strip, the query then its results, at `out_path` (format by extension)."""
    layout = Layout(tile)
    sheet = Image.new("RGB", layout.strip_size(len(results)), PAPER)
    unreadable = _draw_strip(sheet, 0, layout, query, results)
    return WrittenSheet(_save_sheet(sheet, Path(out_path)), unreadable)


def grid_sheet(
    rows: Sequence[tuple[SheetItem, Sequence[SheetItem]]], out_path: Path, tile: int = 256
) -> WrittenSheet:
    """Write several strips, one under the other, as a single image at `out_path`."""
    if not rows:
        raise ValueError("grid_sheet needs at least one (query, results) row")
    layout = Layout(tile)
    sizes = [layout.strip_size(len(results)) for _, results in rows]
    sheet = Image.new("RGB", (max(w for w, _ in sizes), sum(h for _, h in sizes)), PAPER)
    top = 0
    unreadable = []
    for (query, results), (_, height) in zip(rows, sizes, strict=True):
        unreadable += _draw_strip(sheet, top, layout, query, results)
        top += height
    return WrittenSheet(_save_sheet(sheet, Path(out_path)), unreadable)


def _draw_strip(
    sheet: Image.Image, top: int, layout: Layout, query: SheetItem, results: Sequence[SheetItem]
) -> list[tuple[Path, str]]:
    """Draw one strip; return the images that could not be read (their tiles are grey)."""
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=layout.font_size)
    y = top + layout.margin
    unreadable = []
    for index, item in enumerate([query, *results]):
        x = layout.tile_x(index)
        tile, problem = _tile(item, layout.tile, font)
        sheet.paste(tile, (x, y))
        if problem is not None:
            unreadable.append((item.image_path, problem))
        second = "query" if index == 0 else _score_text(item.score)
        second = second if item.note is None else item.note
        lines = (_ellipsis(safe_display(item.caption), font, layout.tile), second)
        for n, line in enumerate(lines):
            text_y = y + layout.tile + layout.gap + n * layout.caption_height // 2
            draw.text((x, text_y), line, fill=INK if n == 0 else MUTED, font=font)
    if results:
        rule_x = layout.tile_x(0) + layout.tile + layout.separator // 2
        rule = [(rule_x, y), (rule_x, y + layout.tile)]
        draw.line(rule, fill=SEPARATOR, width=max(2, layout.gap // 2))
    return unreadable


def _tile(item: SheetItem, tile: int, font: Font) -> tuple[Image.Image, str | None]:
    """The image fitted (aspect kept, centred) into a square, with its head box on top;
    a grey tile and the reason when the image cannot be read."""
    canvas = Image.new("RGB", (tile, tile), PAPER)
    draw = ImageDraw.Draw(canvas)
    try:
        image = load_image(item.image_path)
    except ImageLoadError as exc:
        draw.rectangle((0, 0, tile - 1, tile - 1), fill=UNREADABLE)
        left, top, right, bottom = draw.textbbox((0, 0), "unreadable", font=font)
        centred = ((tile - right - left) / 2, (tile - bottom - top) / 2)
        draw.text(centred, "unreadable", fill=INK, font=font)
        return canvas, exc.reason
    scale = tile / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    ox, oy = (tile - width) // 2, (tile - height) // 2
    canvas.paste(image.resize((width, height), Image.Resampling.BILINEAR), (ox, oy))
    if item.head_box is not None:
        x0, y0, x1, y1 = item.head_box
        scaled = (ox + x0 * scale, oy + y0 * scale, ox + x1 * scale - 1, oy + y1 * scale - 1)
        line = max(2, tile // 96)
        if item.fallback:
            _dashed_rectangle(draw, scaled, FALLBACK_BOX, line, dash=max(4, tile // 32))
        else:
            draw.rectangle(scaled, outline=DETECTED_BOX, width=line)
    return canvas, None


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    colour: RGB,
    width: int,
    dash: int,
) -> None:
    x0, y0, x1, y1 = box
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    for (ax, ay), (bx, by) in itertools.pairwise(corners):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):  # every other segment: dash, gap, dash...
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            start = (ax + (bx - ax) * t0, ay + (by - ay) * t0)
            end = (ax + (bx - ax) * t1, ay + (by - ay) * t1)
            draw.line([start, end], fill=colour, width=width)


def _score_text(score: float | None) -> str:
    return "" if score is None else f"score {score:.3f}"


def _ellipsis(text: str, font: Font, width: int) -> str:
    """Shorten `text` in the middle until it fits: both the folder and the extension stay."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2 :]
        shortened = f"{head}...{tail}"
        if font.getlength(shortened) <= width:
            return shortened
    return "..."


def check_sheet_target(path: Path) -> str:
    """The image format a sheet at `path` is written in; a SheetError where none can be."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SHEET_FORMATS:
        known = ", ".join(SHEET_FORMATS)
        raise SheetError(
            f"{path}: a contact sheet's name must end in {known} (the format), "
            f"not {suffix or 'nothing'}"
        )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise SheetError(f"{path}: a symbolic link to a missing file") from None
        return SHEET_FORMATS[suffix]
    except OSError as exc:
        raise SheetError(f"{path}: cannot write a contact sheet there: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise SheetError(f"{path}: is a folder; give a file name, e.g. {path / 'sheet.png'}")
    if not stat.S_ISREG(mode):
        raise SheetError(f"{path}: not a regular file (a FIFO, socket or device); not written")
    return SHEET_FORMATS[suffix]


def _save_sheet(sheet: Image.Image, out_path: Path) -> Path:
    image_format = check_sheet_target(out_path)
    buffer = io.BytesIO()
    sheet.save(buffer, format=image_format, **({"quality": 90} if image_format != "PNG" else {}))
    try:
        if out_path.exists():
            _write_into(out_path, buffer.getvalue())
        else:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out_path, buffer.getvalue())
    except OSError as exc:
        raise SheetError(f"{out_path}: cannot write the contact sheet: {exc.strerror}") from None
    return out_path


def _write_into(path: Path, data: bytes) -> None:
    """Overwrite an existing regular file in place, through a symbolic link if it is one."""
    # O_NONBLOCK: should a FIFO have taken the file's place since the check, open must
    # not wait for a reader; fstat then refuses it.
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SheetError(f"{path}: not a regular file (a FIFO, socket or device); not written")
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
