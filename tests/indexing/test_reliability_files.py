"""Issue 15, the scanning and loading of files: nothing hangs, nothing crashes, nothing lies.

FIFOs, sockets and devices named like images; names that are not UTF-8 or hold terminal
escape codes; decode workers of a killed run; EPS (Ghostscript) behind an image name or
upload type; small files that decode to huge 16-bit images. Real `lookalike` processes
with the fake backbone wherever the issue describes a command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from lookalike.errors import ImageLoadError
from lookalike.indexing import indexer
from lookalike.indexing.indexer import Indexer
from lookalike.load import images
from lookalike.load.images import load_image
from lookalike.load.names import safe_display
from lookalike.store.catalog import Catalog
from lookalike.web import Gallery, RequestError
from tests.end_to_end.test_pipeline import draw, fake_config
from tests.end_to_end.test_reliability import COLOURS, FAKE, colour_folder

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\n"
PSD = b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + struct.pack(">IIHH", 16, 16, 8, 3)


def cli(*args: str | bytes | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process; arguments may be raw bytes (file names)."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def index(root: Path, coll: Path, *extra: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return cli("index", root, "-c", coll, *FAKE, *extra, **kw)  # type: ignore[arg-type]


def errors_of(coll: Path) -> dict[str, str]:
    done = cli("info", coll, "--errors", "--json")
    assert done.returncode == 0, done.stderr
    return {e["path"]: e["error"] for e in json.loads(done.stdout)}


# --- 1. only regular files are opened ---------------------------------------------------


def special_files(root: Path) -> dict[str, str]:
    """A FIFO, a link to it, a socket, a device node and a link to a device, named as images."""
    os.mkfifo(root / "x.jpg")
    (root / "to-fifo.png").symlink_to(root / "x.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock.png"))
    server.close()  # the socket file stays
    os.mknod(root / "dev.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    (root / "null.jpg").symlink_to("/dev/null")
    return {
        "x.jpg": "not a regular file (FIFO)",
        "to-fifo.png": "not a regular file (FIFO)",
        "sock.png": "not a regular file (socket)",
        "dev.jpg": "not a regular file (character device)",
        "null.jpg": "not a regular file (character device)",
    }


@pytest.mark.parametrize("loader", ["threads", "processes"])
def test_fifos_sockets_and_devices_are_skipped_not_opened(tmp_path, loader, record_property):
    root = colour_folder(tmp_path / "photos", per_colour=2)
    expected = special_files(root)
    coll = tmp_path / "coll"
    # The CLI decodes in worker processes from 4 batches on, in threads below that.
    batch = "1" if loader == "processes" else "32"

    done = index(root, coll, "--batch-size", batch, timeout=90)  # it used to hang here

    assert done.returncode == 1, done.stderr  # finished, some files skipped
    assert "indexed: 6 images" in done.stdout
    assert errors_of(coll) == expected
    again = index(root, coll, timeout=60)
    assert again.returncode == 1 and f"skipped: {len(expected)}" in again.stdout
    record_property(f"special_files_skipped_{loader}", len(expected))


def test_ctrl_c_does_not_wait_for_the_queued_decodes(tmp_path, monkeypatch):
    """KeyboardInterrupt in the thread loader cancels what is queued instead of decoding it."""
    root = colour_folder(tmp_path / "photos", per_colour=8)  # 24 files, 3 batches of 8
    decoded = []
    real_load = indexer.load_record

    def slow_load(*args: object) -> object:
        time.sleep(0.2)
        decoded.append(1)
        return real_load(*args)  # type: ignore[arg-type]

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(indexer, "load_record", slow_load)
    monkeypatch.setattr(indexer, "embed_loaded", interrupted)
    run = Indexer(root, tmp_path / "coll", fake_config(), batch_size=8, progress=False, workers=2)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    # The first batch is decoded before it is embedded; of the two queued ones only what
    # the two threads had started may finish.
    assert len(decoded) <= 8 + 2


# --- 2 and 13. names that are not UTF-8, or hold terminal escape codes ------------------

LATIN1 = b"caf\xe9.jpg"  # "café" in Latin-1: not UTF-8
ESCAPES = "red\x1b[31m\x07bell\x1b]0;title\x07.png"


def test_a_name_that_is_not_utf8_is_indexed_queried_listed_and_shown(tmp_path):
    root = colour_folder(tmp_path / "photos", per_colour=2)
    coll = tmp_path / "coll"
    assert index(root, coll).returncode == 0  # an existing collection, before the odd names
    (root / os.fsdecode(LATIN1)).write_bytes((root / "c0/00.png").read_bytes())
    (root / os.fsdecode(b"broken\xff.jpg")).write_bytes(b"")
    draw(root / "c1" / "new.png", COLOURS[1], seed=7)

    done = index(root, coll)

    assert done.returncode == 1, done.stderr  # the empty file is skipped, nothing crashed
    assert "indexed: 8 images (2 embedded now" in done.stdout
    assert "broken\\xff.jpg: empty file" in done.stdout
    name = os.fsdecode(LATIN1)
    catalog = Catalog(coll / "catalog.sqlite", readonly=True)
    rec = catalog.by_path(name)
    assert rec is not None and rec.status == "ok"
    assert os.fsencode(rec.path) == LATIN1 and (root / rec.path).is_file()  # round trip

    by_path = cli("query", coll, LATIN1, "-k", "3", "--sheet", tmp_path / "sheet.png")
    assert by_path.returncode == 0, by_path.stderr
    assert "query: caf\\xe9.jpg" in by_path.stdout
    assert Image.open(tmp_path / "sheet.png").size[0] > 0
    as_json = cli("query", coll, "c0/00.png", "-k", "8", "--json")
    paths = [r["path"] for r in json.loads(as_json.stdout)["results"]]
    assert LATIN1 in {os.fsencode(p) for p in paths}  # JSON keeps the bytes (\udce9)
    table = cli("query", coll, "c0/00.png", "-k", "8")
    assert "caf\\xe9.jpg" in table.stdout

    assert errors_of(coll) == {"broken\udcff.jpg": "empty file"}
    listed = cli("info", coll, "--errors")
    assert "broken\\xff.jpg: empty file" in listed.stdout
    assert index(root, coll).returncode == 1  # a later run still takes it and says so


def test_escape_codes_in_names_are_printed_escaped(tmp_path):
    root = colour_folder(tmp_path / "photos", per_colour=2)
    draw(root / ESCAPES, COLOURS[0], seed=3)
    (root / ("empty\x1b[2J" + ESCAPES)).write_bytes(b"")
    coll = tmp_path / "coll"

    outputs = [
        index(root, coll).stdout,
        cli("query", coll, ESCAPES, "-k", "7").stdout,
        cli("query", coll, root / ESCAPES, "-k", "7").stdout,
        cli("info", coll, "--errors").stdout,
    ]

    shown = safe_display(ESCAPES)
    assert shown == "red\\x1b[31m\\x07bell\\x1b]0;title\\x07.png"
    for out in outputs:
        assert shown in out
        assert "\x1b" not in out and "\x07" not in out
    assert "empty\\x1b[2J" in outputs[0] and "empty\\x1b[2J" in outputs[3]


@pytest.mark.parametrize(
    "name, shown",
    [
        ("plain ünïcødé 画像 😀.png", "plain ünïcødé 画像 😀.png"),
        ("new\nline\ttab\r.png", "new\\nline\\ttab\\r.png"),
        ("\x9b31m csi.png", "\\x9b31m csi.png"),
        ("gpj\u202eexe.png", "gpj\\u202eexe.png"),
        (os.fsdecode(b"caf\xe9\x1b.jpg"), "caf\\xe9\\x1b.jpg"),
    ],
)
def test_safe_display(name, shown):
    assert safe_display(name) == shown
    assert safe_display(Path(name)) == shown
    safe_display(name).encode("ascii", "backslashreplace").decode("ascii")  # printable anywhere


# --- 7. decode workers die with their parent ---------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # an orphan's zombie may wait for a PID 1 that never reaps


def test_decode_workers_die_with_a_killed_index(tmp_path, record_property):
    root = colour_folder(tmp_path / "photos", per_colour=100)  # 300 files, batches of 2
    command = [sys.executable, "-m", "lookalike.cli", "index", root, "-c", tmp_path / "coll"]
    proc = subprocess.Popen(
        [*command, *FAKE, "--batch-size", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        workers: list[int] = []
        while len(workers) < 3 and proc.poll() is None and time.monotonic() < deadline:
            workers = children_of(proc.pid)  # 2 decode workers and the resource tracker
            time.sleep(0.05)
        assert len(workers) >= 3, f"the decode workers did not start ({workers})"
        time.sleep(0.3)  # let them take work
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # do not leave them behind for the rest of the run
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(workers)} children outlived the killed index"
    record_property("children_gone_after_kill", f"{len(workers)} of {len(workers)}")


WATCHED = """
import os, subprocess, sys
# The parent's pid is passed in, not read by the child: on a busy machine the parent may be
# killed before the child's imports finish, and the child must still see it gone.
child = subprocess.Popen([sys.executable, "-c",
    f"from lookalike.indexing.decode_pool import _watch; _watch({os.getpid()})"])
print(child.pid, flush=True)
child.wait()
"""


def test_the_watchdog_ends_a_worker_whose_parent_died():
    """The fallback where PR_SET_PDEATHSIG is missing: the parent pid changes, the worker exits."""
    parent = subprocess.Popen([sys.executable, "-c", WATCHED], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())  # type: ignore[union-attr]
    time.sleep(0.5)
    assert alive(worker)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the watched worker outlived its parent")


# --- 8. only allowed Pillow formats, for files and uploads --------------------------------


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch) -> Path:
    """A `gs` first on PATH that leaves a mark when anything runs it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mark = tmp_path / "gs-ran"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # found again on this PATH
    return mark


def test_eps_and_psd_behind_image_names_never_reach_their_plugins(tmp_path, fake_ghostscript):
    root = colour_folder(tmp_path / "photos", per_colour=1)
    (root / "doc.jpg").write_bytes(EPS)
    (root / "dos-eps.png").write_bytes(b"\xc5\xd0\xd3\xc6" + b"\x00" * 28 + EPS)
    (root / "layers.png").write_bytes(PSD)
    coll = tmp_path / "coll"

    done = index(root, coll)  # with the fake gs on its PATH

    assert not fake_ghostscript.exists(), "Ghostscript ran"
    assert done.returncode == 1, done.stderr
    assert errors_of(coll) == {
        "doc.jpg": "unsupported format: EPS",
        "dos-eps.png": "unsupported format: EPS",
        "layers.png": "unsupported format: PSD",
    }


def test_an_eps_upload_is_refused_without_ghostscript(tmp_path, fake_ghostscript):
    root = colour_folder(tmp_path / "photos", per_colour=1)
    coll = tmp_path / "coll"
    Indexer(root, coll, fake_config(), progress=False).run()
    gallery = Gallery(coll)
    refusals = []
    for ctype in ("image/png", "image/jpeg", "image/tiff"):
        with pytest.raises(RequestError) as refused:
            gallery.query_upload(EPS, ctype, k=2)
        refusals.append((refused.value.status, str(refused.value)))
    assert not fake_ghostscript.exists(), "Ghostscript ran"
    assert refusals == [(400, "upload: unsupported format: EPS")] * 3


# --- 9. memory of small files that decode to huge images ---------------------------------


def sixteen_bit_png(path: Path, width: int, height: int, colour_type: int = 0) -> Path:
    """A 16-bit PNG written row by row (no full image in memory); compresses to little."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    channels = {0: 1, 4: 2, 6: 4}[colour_type]  # grey, grey + alpha, RGBA
    row = b"\0" + (np.arange(width * channels) % 256 * 257).astype(">u2").tobytes()
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def peak_mb_of(command: list[str | Path]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Peak resident memory of a command (its own process tree's largest), in MB."""
    probe = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "print(done.returncode); sys.stdout.write(done.stdout + done.stderr)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *map(str, command)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak, code, rest = out.stdout.split("\n", 2)
    return int(peak) / 1024, subprocess.CompletedProcess(command, int(code), rest)


def test_indexing_a_small_huge_16_bit_png_stays_small(tmp_path, record_property):
    root = tmp_path / "photos"
    root.mkdir()
    big = sixteen_bit_png(root / "huge.png", 9000, 9000)
    assert big.stat().st_size < 1_000_000

    peak, done = peak_mb_of(
        [sys.executable, "-m", "lookalike.cli", "index", root, "-c", tmp_path / "coll", *FAKE]
    )

    assert done.returncode == 0, done.stdout
    assert "indexed: 1 images" in done.stdout
    record_property("index_9000x9000_16bit_png_peak_mb", round(peak))
    assert peak < 600, f"{peak:.0f} MB"


UPLOADS = """
import sys, threading
from pathlib import Path
from lookalike.web import Gallery
gallery = Gallery(Path(sys.argv[1]))
data = Path(sys.argv[2]).read_bytes()
answers = []
def upload():
    answers.append(gallery.query_upload(data, "image/png", k=2))
threads = [threading.Thread(target=upload) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(answers), answers[0]["query"]["width"])
"""


def test_three_uploads_at_once_of_small_huge_png_stay_small(tmp_path, record_property):
    root = colour_folder(tmp_path / "photos", per_colour=1)
    coll = tmp_path / "coll"
    Indexer(root, coll, fake_config(), progress=False).run()
    upload = sixteen_bit_png(tmp_path / "upload.png", 6300, 6300)
    assert upload.stat().st_size < 400_000

    peak, done = peak_mb_of([sys.executable, "-c", UPLOADS, coll, upload])

    assert done.returncode == 0, done.stdout
    assert done.stdout.split()[:2] == ["3", "2048"]
    record_property("three_uploads_6300x6300_16bit_png_peak_mb", round(peak))
    assert peak < 600, f"{peak:.0f} MB"


def test_decodes_wait_for_a_slot(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(path)
    running, most = [0], [0]
    lock = threading.Lock()
    real_decode = images._decode

    def counting(*args: object) -> Image.Image:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return real_decode(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(images, "_decode", counting)
    threads = [threading.Thread(target=load_image, args=(path,)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == images.decode_slots.limit


def test_a_decode_inside_a_held_slot_takes_no_second_one(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    monkeypatch.setattr(images, "decode_slots", images.DecodeSlots(1))

    def caller_holding_the_only_slot() -> None:  # as the web server may, around more work
        with images.decode_slots:
            load_image(path)

    worker = threading.Thread(target=caller_holding_the_only_slot, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "load_image waited for a second slot of its own thread"
    with images.decode_slots:  # and the slot was given back
        pass


def test_special_files_refused_by_the_loader(tmp_path):
    expected = special_files(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(ImageLoadError) as refused:
            load_image(tmp_path / name)
        assert refused.value.reason == reason
        with pytest.raises(ImageLoadError):
            images.file_sha256(tmp_path / name)


def test_big_images_keep_their_look_when_reduced_in_strips(tmp_path):
    """A big RGBA image and a 16-bit one come out as if converted and reduced whole."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1200, 4100, 4), dtype=np.uint8)  # 5 strips
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png", compress_level=1)
    loaded = load_image(tmp_path / "rgba.png")
    white = Image.new("RGBA", (4100, 1200), (255, 255, 255, 255))
    whole = Image.alpha_composite(white, Image.fromarray(pixels, "RGBA")).convert("RGB")
    whole = whole.reduce(2)
    whole.thumbnail((2048, 2048), Image.Resampling.BICUBIC)
    assert loaded.size == whole.size
    assert np.abs(np.asarray(loaded, int) - np.asarray(whole, int)).max() <= 1
    sixteen = load_image(sixteen_bit_png(tmp_path / "grey16.png", 4500, 100))
    grey = (np.arange(4500) % 256).astype(np.uint8)[None].repeat(100, 0)  # the 16 bits / 257
    whole = Image.fromarray(grey, "L").convert("RGB").reduce(2)
    whole.thumbnail((2048, 2048), Image.Resampling.BICUBIC)
    assert sixteen.size == whole.size
    assert np.abs(np.asarray(sixteen, int) - np.asarray(whole, int)).max() <= 1
    # Collections keep reading their old files: a small image comes back exactly.
    small = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "small.png")), small)
