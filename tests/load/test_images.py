"""images.py: finding files, and loading every odd or broken input into RGB or a clear error.

Every bad input is generated here, in tmp_path; the real images of the shared
datasets are only read (fuzzing mutates copies in memory).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from lookalike.errors import (
    ImageLoadError,
    ImageTooLargeError,
    LookalikeError,
    UnsupportedImageError,
)
from lookalike.load import images
from lookalike.load.images import LoadLimits, file_sha256, iter_image_files, load_image


def save(image: Image.Image, path: Path, format: str | None = None, **params: object) -> Path:
    image.save(path, format=format, **params)
    return path


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """An RGB image with no symmetry, so a wrong rotation or channel order shows."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.dstack([x, y, 255 - x]).astype(np.uint8), "RGB")


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(data + chunk(b"IEND", b""))
    return path


def assert_rgb(image: Image.Image, size: tuple[int, int] | None = None) -> None:
    assert image.mode == "RGB"
    if size is not None:
        assert image.size == size


# --- iter_image_files ---------------------------------------------------------------


def test_iter_image_files_sorted_filtered_and_odd_names(tmp_path: Path) -> None:
    odd = ["with space.jpg", "ünïcødé 画像.png", "new\nline.gif", "UPPER.JPG", "b.WebP"]
    for name in [*odd, "notes.txt", "a.jpeg", ".hidden.png", "photo.heic"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "c.bmp").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "thumb.png").write_bytes(b"x")

    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]

    expected = sorted([*odd, "a.jpeg", "photo.heic", "sub/deeper/c.bmp"])
    assert found == expected  # hidden files/folders and .txt skipped; HEIC listed for reporting
    assert found == [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]


def test_iter_image_files_survives_symlink_loops_and_yields_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    save(gradient(), tmp_path / "a" / "1.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a -> root -> a -> ...
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a")
    (tmp_path / "x1.png").symlink_to(tmp_path / "x2.png")  # a file link loop
    (tmp_path / "x2.png").symlink_to(tmp_path / "x1.png")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")

    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]

    assert found == ["a/1.png", "gone.jpg", "x1.png", "x2.png"]
    with pytest.raises(ImageLoadError, match="broken symbolic link"):
        load_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageLoadError, match="broken symbolic link"):
        load_image(tmp_path / "x1.png")


def test_iter_image_files_follows_a_linked_folder_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    save(gradient(), outside / "o.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link1").symlink_to(outside)
    (root / "link2").symlink_to(outside)
    assert [p.relative_to(root).as_posix() for p in iter_image_files(root)] == ["link1/o.png"]


def test_iter_image_files_on_a_file_and_on_nothing(tmp_path: Path) -> None:
    one = save(gradient(), tmp_path / "one.png")
    assert list(iter_image_files(one)) == [one]
    with pytest.raises(LookalikeError, match="no such folder"):
        list(iter_image_files(tmp_path / "missing"))


# --- load_image: what must load --------------------------------------------------------


def test_png_named_jpg_loads(tmp_path: Path) -> None:
    path = save(gradient(), tmp_path / "really_png.jpg", "PNG")
    loaded = load_image(path)
    assert_rgb(loaded, (64, 48))
    assert np.array_equal(np.asarray(loaded), np.asarray(gradient()))


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1)])
def test_tiny_images_load(tmp_path: Path, size: tuple[int, int]) -> None:
    path = save(Image.new("RGB", size, (10, 200, 30)), tmp_path / "tiny.png")
    loaded = load_image(path)
    assert_rgb(loaded, size)
    assert loaded.getpixel((0, 0)) == (10, 200, 30)


def test_grey_and_bilevel_images_become_rgb(tmp_path: Path) -> None:
    grey = save(Image.new("L", (8, 8), 77), tmp_path / "grey.png")
    assert load_image(grey).getpixel((3, 3)) == (77, 77, 77)
    bilevel = Image.new("1", (8, 8), 0)
    bilevel.putpixel((2, 2), 1)
    loaded = load_image(save(bilevel, tmp_path / "bits.pbm"))
    assert_rgb(loaded)
    assert loaded.getpixel((2, 2)) == (255, 255, 255)
    assert loaded.getpixel((0, 0)) == (0, 0, 0)


def test_sixteen_bit_png_is_scaled_not_white(tmp_path: Path) -> None:
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, 0)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")  # really stored as 16 bit
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (4, 4, 3)
    assert loaded[0, :, 0].tolist() == [0, 64, 128, 255]


def test_palette_with_transparency_composites_on_white(tmp_path: Path) -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 5, 10))
    path = save(palette, tmp_path / "pal.png", transparency=1)  # index 1 (blue) transparent
    loaded = load_image(path)
    assert loaded.getpixel((1, 1)) == (255, 255, 255)
    assert loaded.getpixel((8, 8)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composites_on_white(tmp_path: Path, mode: str) -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.paste((40, 40, 40, 255), (5, 0, 10, 10))
    path = save(rgba.convert(mode), tmp_path / f"alpha_{mode}.png")
    loaded = load_image(path)
    assert loaded.getpixel((1, 1)) == (255, 255, 255)
    assert loaded.getpixel((8, 8)) == (40, 40, 40)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = save(gradient().convert("CMYK"), tmp_path / "print.jpg", quality=95)
    loaded = load_image(path)
    assert_rgb(loaded, (64, 48))
    diff = np.abs(np.asarray(loaded, np.int16) - np.asarray(gradient(), np.int16))
    assert diff.mean() < 12


@pytest.mark.parametrize(("name", "format"), [("anim.gif", "GIF"), ("anim.webp", "WEBP")])
def test_animation_gives_first_frame(tmp_path: Path, name: str, format: str) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / name
    frames[0].save(path, format, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    r, g, b = load_image(path).getpixel((10, 10))
    assert r > 200 and g < 40 and b < 40


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = gradient(64, 48)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    plain = save(upright, tmp_path / "plain.jpg", quality=95)
    a, b = load_image(rotated), load_image(plain)
    assert a.size == b.size == (64, 48)
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() < 4


def test_big_jpeg_is_downscaled_while_decoding(tmp_path: Path, monkeypatch) -> None:
    path = save(gradient(4000, 1000), tmp_path / "big.jpg", quality=80)
    drafts = []
    original = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str, size: tuple[int, int]) -> object:
        result = original(self, mode, size)
        drafts.append((size, self.size))  # requested, and what libjpeg will decode
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    loaded = load_image(path, LoadLimits(max_side=1000))
    assert_rgb(loaded, (1000, 250))
    assert drafts == [((1000, 250), (1000, 250))]  # decoded at 1/4 scale, not 4000x1000


def test_big_png_is_downscaled_keeping_aspect(tmp_path: Path) -> None:
    path = save(gradient(3000, 600), tmp_path / "wide.png")
    assert_rgb(load_image(path), (2048, 410))


# --- load_image: what must fail, and how -------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file") as info:
        load_image(tmp_path / "empty.jpg")
    assert info.value.path == str(tmp_path / "empty.jpg")
    assert info.value.reason == "empty file"


@pytest.mark.parametrize(("name", "format"), [("cut.jpg", "JPEG"), ("cut.png", "PNG")])
def test_truncated_file_raises_instead_of_grey(tmp_path: Path, name: str, format: str) -> None:
    buffer = io.BytesIO()
    gradient(256, 256).save(buffer, format)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(path)


def test_html_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "download.jpg"
    path.write_text("<!DOCTYPE html>\n<html><body>404 Not Found – ページ</body></html>\n")
    with pytest.raises(ImageLoadError, match=r"not an image \(looks like text/HTML\)") as info:
        load_image(path)
    assert not isinstance(info.value, UnsupportedImageError)


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(2000)))
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(path)


def test_decompression_bomb_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = save(gradient(400, 300), tmp_path / "bomb.png")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    with pytest.raises(ImageTooLargeError) as info:
        load_image(path, LoadLimits(max_pixels=100_000))
    assert "400x300 = 120,000 pixels" in info.value.reason
    assert "limit 100,000" in info.value.reason


def test_huge_header_refused(tmp_path: Path) -> None:
    # 20000x20000 claimed in 100 bytes: Pillow's own guard (2 x MAX_IMAGE_PIXELS) trips at open.
    path = png_header_only(tmp_path / "huge.png", 20_000, 20_000)
    with pytest.raises(ImageTooLargeError, match="400000000"):
        load_image(path)
    # Below Pillow's guard, ours trips on the header alone.
    path = png_header_only(tmp_path / "large.png", 5_000, 5_000)
    with pytest.raises(ImageTooLargeError, match="25,000,000 pixels"):
        load_image(path, LoadLimits(max_pixels=10_000_000))


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("photo.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "HEIC"),
        ("photo.jpg", b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + b"\0" * 64, "AVIF"),
        ("logo.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        ("photo.heif", b"\x01\x02\x03garbage" * 10, "HEIF"),  # by extension alone
    ],
)
def test_unsupported_formats(tmp_path: Path, name: str, data: bytes, kind: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UnsupportedImageError) as info:
        load_image(tmp_path / name)
    assert info.value.reason == f"unsupported format: {kind}"


def test_permission_denied(tmp_path: Path, monkeypatch) -> None:
    path = save(gradient(), tmp_path / "secret.png")
    path.chmod(0)
    try:
        if os.geteuid() != 0:  # root reads anything: then the chmod alone proves nothing
            with pytest.raises(ImageLoadError, match="permission denied"):
                load_image(path)

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(images, "open", refuse, raising=False)
        with pytest.raises(ImageLoadError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path / "folder.jpg")
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nothing.jpg")


def test_no_file_handles_left_open(tmp_path: Path) -> None:
    good = save(gradient(), tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_image(good)
        with pytest.raises(ImageLoadError):
            load_image(bad)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_file_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # more than one read chunk
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


# --- robustness: arbitrary and mutated bytes ------------------------------------------------

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBPVP8 "]
SMALL = LoadLimits(max_pixels=4_000_000, max_side=512)


def load_or_error(path: Path) -> Image.Image | None:
    """The property under test: an RGB image, or an ImageLoadError; nothing else."""
    try:
        image = load_image(path, SMALL)
    except ImageLoadError:
        return None
    assert_rgb(image)
    assert max(image.size) <= SMALL.max_side
    return image


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_arbitrary_bytes_load_or_raise_image_load_error(
    tmp_path: Path, magic: bytes, body: bytes
) -> None:
    path = tmp_path / "fuzz.img"
    path.write_bytes(magic + body)
    load_or_error(path)


def real_images(shared_dataset) -> list[Path]:
    seeds = sorted(shared_dataset("seed-cards").glob("*"))
    small = [p for p in seeds if p.suffix in (".jpg", ".png") and p.stat().st_size < 150_000]
    faces = sorted(shared_dataset("anime-faces-dev").glob("*/00*.jpg"))[:10]
    orl = sorted(shared_dataset("orl-faces-dev").glob("s1/*.pgm"))[:2]
    return small + faces + orl


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    how = rng.choice(["flip", "truncate", "splice", "zero_run"])
    if how == "flip":
        for _ in range(rng.randint(1, 20)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del buf[rng.randrange(1, len(buf)) :]
    elif how == "splice":  # a copied block, as a bad disk or download can produce
        a, b = sorted(rng.sample(range(len(buf)), 2))
        buf[rng.randrange(len(buf)) : 0] = buf[a : min(b, a + 4096)]
    else:
        start = rng.randrange(len(buf))
        buf[start : start + rng.randint(1, 256)] = bytes(min(256, len(buf) - start))
    return bytes(buf)


def test_mutated_real_images_load_or_raise_image_load_error(
    tmp_path: Path, record_property, shared_dataset
) -> None:
    rng = random.Random(20240611)
    sources = [(p.suffix, p.read_bytes()) for p in real_images(shared_dataset)]
    tried = loaded = 0
    for i in range(300):
        suffix, data = sources[i % len(sources)]
        path = tmp_path / f"m{i}{suffix}"
        path.write_bytes(mutate(data, rng))
        loaded += load_or_error(path) is not None
        tried += 1
        path.unlink()
    record_property("fuzz_inputs", tried)
    record_property("fuzz_inputs_loaded", loaded)
    print(f"fuzzed {tried} mutated real images: {loaded} loaded, {tried - loaded} refused")
    assert tried == 300
    assert 0 < loaded < tried  # both paths were exercised
