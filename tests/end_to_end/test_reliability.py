"""Issue 5, end to end: bad files in a real run, bad arguments, a busy or full collection,
concurrent queries and a collection format without pickle.

Everything runs on small generated folders with the fake backbone (no weights). The
kill-and-resume test lives in test_reliability_kill.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike import fileio
from lookalike.cli import main
from lookalike.errors import CollectionBusyError, CollectionError, LabelsError
from lookalike.index import list_indexes
from lookalike.indexing.indexer import Indexer
from lookalike.load import images
from lookalike.load.labels import Labels, read_labels_csv
from lookalike.search.searcher import Searcher
from lookalike.store.collection import MANIFEST, Collection
from tests.end_to_end.test_pipeline import draw, fake_config
from tests.load.test_images import gradient, png_header_only, save

SRC = Path(__file__).resolve().parents[2] / "src"
COLOURS = [(200, 30, 40), (40, 180, 60), (30, 60, 200)]
FAKE = ["--backbone", "fake", "--detector", "none", "-q"]


def lookalike(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def colour_folder(root: Path, per_colour: int = 5, first: int = 0) -> Path:
    for c, colour in enumerate(COLOURS):
        for i in range(first, first + per_colour):
            draw(root / f"c{c}" / f"{i:02d}.png", colour, seed=100 * c + i)
    return root


def answer(result) -> list[tuple[str, float]]:
    return [(m.path, m.score) for m in result.matches]


def same_as_json(results: list[dict], expected: list[tuple[str, float]]) -> bool:
    """`query --json` results equal an in-process answer (JSON rounds scores to 6 places)."""
    return [r["path"] for r in results] == [p for p, _ in expected] and np.allclose(
        [r["score"] for r in results], [s for _, s in expected], rtol=0, atol=1e-6
    )


# --- every bad input of the issue, through a whole index run ----------------------------


def odd_but_good_files(root: Path) -> None:
    """Inputs that look odd but are images: each must be indexed."""
    save(gradient(), root / "really a png.jpg", "PNG")
    save(gradient(2400, 1600), root / "big.jpg", quality=70)
    save(gradient().convert("CMYK"), root / "cmyk.jpg", quality=95)
    values = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    save(Image.fromarray(values), root / "sixteen.png")
    save(gradient().convert("L"), root / "grey.png")
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    save(palette, root / "palette.png", transparency=1)
    save(gradient().convert("RGBA"), root / "rgba.png")
    frames = [Image.new("RGB", (20, 20), c) for c in COLOURS]
    for name in ("anim.gif", "anim.webp"):
        frames[0].save(root / name, save_all=True, append_images=frames[1:], duration=50)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, "rotate 90 CW to display"
    save(gradient().transpose(Image.Transpose.ROTATE_90), root / "exif.jpg", exif=exif.tobytes())
    save(gradient(), root / "upright.jpg")
    save(Image.new("RGB", (1, 1), (9, 9, 9)), root / "one.png")
    save(Image.new("RGB", (1, 300), (9, 90, 9)), root / "thin.png")
    for name in ("with space.png", "ünïcødé 画像.png", "new\nline.png"):
        save(gradient(), root / name)


def bad_files(root: Path) -> dict[str, str]:
    """Inputs that cannot be indexed: file name -> the reason the collection must record."""
    (root / "empty.jpg").write_bytes(b"")
    whole = (root / "upright.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    whole = save(Image.fromarray(noise), root / "cut.png").read_bytes()
    (root / "cut.png").write_bytes(whole[: len(whole) // 2])
    (root / "page.jpg").write_text("<!DOCTYPE html><html><body>404</body></html>")
    png_header_only(root / "bomb.png", 20_000, 20_000)
    (root / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)
    (root / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (root / "gone.jpg").symlink_to(root / "missing.jpg")
    (root / "loop1.png").symlink_to(root / "loop2.png")
    (root / "loop2.png").symlink_to(root / "loop1.png")
    save(gradient(), root / "secret.png")
    return {
        "empty.jpg": "empty file",
        "cut.jpg": "corrupt",
        "cut.png": "truncated or corrupt",
        "page.jpg": "not an image",
        "bomb.png": "pixels",
        "photo.heic": "unsupported format: HEIC",
        "logo.svg": "unsupported format: SVG",
        "gone.jpg": "broken symbolic link",
        "loop1.png": "broken symbolic link",
        "loop2.png": "broken symbolic link",
        "secret.png": "permission denied",
    }


def refuse_secret_files(monkeypatch) -> None:
    """Permission denied for secret.png (root reads anything, so chmod proves nothing here)."""
    real_open = open

    def guarded(path, *args, **kwargs):
        if Path(path).name == "secret.png":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", guarded, raising=False)


def test_every_bad_input_is_recorded_counted_listed_and_sets_the_exit_code(
    tmp_path, monkeypatch, capsys
):
    root = colour_folder(tmp_path / "photos")
    odd_but_good_files(root)
    expected_bad = bad_files(root)
    refuse_secret_files(monkeypatch)
    coll = tmp_path / "coll"
    n_good = 15 + 16  # the colour fields and odd_but_good_files

    assert main(["index", str(root), "-c", str(coll), *FAKE]) == 1  # finished, skipped some
    out = capsys.readouterr().out
    assert f"indexed: {n_good} images" in out
    assert f"skipped: {len(expected_bad)}" in out

    catalog = Collection.open(coll).catalog
    recorded = {r.path: r.error for r in catalog.by_status("error")}
    assert set(recorded) == set(expected_bad)
    for name, reason in expected_bad.items():
        assert reason in recorded[name], (name, recorded[name])
    assert catalog.counts() == {"ok": n_good, "error": len(expected_bad)}

    assert main(["info", str(coll), "--errors", "--json"]) == 0
    listed = {e["path"]: e["error"] for e in json.loads(capsys.readouterr().out)}
    assert listed == recorded
    assert main(["info", str(coll), "--errors"]) == 0
    text = capsys.readouterr().out
    assert f"{len(expected_bad)} file(s) skipped" in text
    assert "photo.heic: unsupported format: HEIC" in text

    # The rotated photo was indexed upright: same size and nearly the same vector.
    ok = {r.path: r for r in catalog.by_status("ok")}
    assert (ok["exif.jpg"].width, ok["exif.jpg"].height) == (64, 48)
    assert max(ok["big.jpg"].width, ok["big.jpg"].height) <= 2048  # downscaled while loading
    searcher = Searcher(coll)
    rotated, upright = (
        searcher.fused[searcher.row_of[ok[n].id]] for n in ("exif.jpg", "upright.jpg")
    )
    assert float(rotated @ upright) > 0.99

    # A second run has nothing new, but still says the folder has unreadable files.
    assert main(["index", str(root), "-c", str(coll), *FAKE]) == 1
    assert f"skipped: {len(expected_bad)}" in capsys.readouterr().out
    for name in expected_bad:
        (root / name).unlink()
    assert main(["index", str(root), "-c", str(coll), *FAKE]) == 0  # nothing skipped now
    assert Collection.open(coll).catalog.counts() == {"ok": n_good}


# --- labels: arbitrary text gives labels or a LabelsError, nothing else ---------------------

# Pieces of CSV that matter: separators, quotes, line ends, known and escaping paths.
TOKENS = [
    "a/1.png",
    "b.png",
    "./b.png",
    "..",
    "/",
    "\\",
    ",",
    '"',
    "\n",
    "\r\n",
    " ",
    "\x00",
    "é画",
    "x",
]
CELLS = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from(["file,label\n", "\ufefffile, hair ,eyes\n", "file\n", "", "x,y\n"]),
    body=st.one_of(CELLS, st.binary(max_size=300).map(lambda b: b.decode("latin-1"))),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    known=st.none() | st.just(["a/1.png", "b.png"]),
)
def test_labels_parser_returns_labels_or_labels_error(tmp_path, header, body, encoding, known):
    path = tmp_path / "labels.csv"
    path.write_bytes((header + body).encode(encoding, errors="replace"))
    try:
        labels = read_labels_csv(path, known)
    except LabelsError as exc:
        assert str(exc).startswith(str(path))  # the message names the file (and line)
        return
    assert isinstance(labels, Labels) and labels.tasks and labels.by_path
    for file in labels.by_path:
        assert file and not file.startswith("/") and ".." not in file.split("/")
        assert known is None or file in known


# --- bad arguments: clear messages, non-zero exit codes, tracebacks only with --debug --------


@pytest.fixture(scope="module")
def animeface_collection(tmp_path_factory) -> Path:
    """Indexed with the real anime face detector, which finds no face in plain colour fields."""
    tmp = tmp_path_factory.mktemp("anime")
    root = colour_folder(tmp / "photos", per_colour=3)
    Indexer(
        root, tmp / "coll", fake_config().with_options(detector="animeface"), progress=False
    ).run()
    return tmp / "coll"


def test_query_without_a_face_uses_the_fallback_and_says_so(animeface_collection, tmp_path, capsys):
    query = save(gradient(), tmp_path / "no face.png")
    assert main(["query", str(animeface_collection), str(query), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query_fallback"] is True and out["query_head_box"] and len(out["results"]) == 4
    assert main(["query", str(animeface_collection), str(query)]) == 0
    assert "no face found in the query" in capsys.readouterr().out


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (20, 9)])  # the fake backbone's input is 32
def test_query_smaller_than_the_model_input_works(animeface_collection, tmp_path, capsys, size):
    query = save(Image.new("RGB", size, COLOURS[2]), tmp_path / "tiny.png")
    assert main(["query", str(animeface_collection), str(query), "--json", "-k", "3"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["path"].split("/")[0] for r in results] == ["c2"] * 3


def break_manifest(coll: Path, **changes: object) -> None:
    manifest = json.loads((coll / MANIFEST).read_text())
    manifest.update(changes)
    (coll / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def small_collection(tmp_path) -> tuple[Path, Path]:
    root = colour_folder(tmp_path / "photos", per_colour=3)
    coll = tmp_path / "coll"
    Indexer(root, coll, fake_config(), progress=False).run()
    return root, coll


def expect_error(capsys, argv: list[str], code: int, pattern: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("lookalike: error: ") and "Traceback" not in err
    assert re.search(pattern, err), err
    return err


def test_collection_errors_are_clear_messages(small_collection, tmp_path, capsys):
    root, coll = small_collection
    query = str(save(gradient(), tmp_path / "q.png"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    expect_error(capsys, ["query", str(tmp_path / "plain"), query], 2, "not a lookalike collection")
    expect_error(capsys, ["query", str(tmp_path / "nowhere"), query], 2, "no such collection")
    expect_error(
        capsys,
        ["index", str(root), "-c", str(tmp_path / "plain"), *FAKE],
        2,
        "is not a lookalike collection",
    )
    expect_error(capsys, ["query", str(coll), "nope.png"], 2, "not an image file")

    # Vectors made with other weights (an upgraded model package) must not be compared.
    break_manifest(coll, weights_hash="fake:older-weights")
    expect_error(capsys, ["query", str(coll), query], 2, "other backbone weights")
    # An index run with nothing to embed adds no vector, so it loads no backbone to check
    # the weights (issue 20: a no-op in under 2 s); one with a file to embed refuses.
    assert main(["index", str(root), "-c", str(coll), *FAKE]) == 0
    assert "nothing changed" in capsys.readouterr().out
    draw(root / "c0" / "new.png", COLOURS[0], seed=999)
    expect_error(capsys, ["index", str(root), "-c", str(coll), *FAKE], 2, "other backbone weights")
    assert main(["query", str(coll), "c0/00.png"]) == 0  # stored vectors still answer by path
    capsys.readouterr()

    break_manifest(coll, format_version=99)
    expect_error(capsys, ["query", str(coll), query], 2, "format version 99")
    expect_error(capsys, ["info", str(coll)], 2, "format version 99")
    with pytest.raises(CollectionError, match="format version 99"):
        main(["--debug", "info", str(coll)])  # --debug: the exception, with its traceback


def test_bad_labels_on_the_command_line_name_the_line(small_collection, tmp_path, capsys):
    _, coll = small_collection
    labels = tmp_path / "labels.csv"
    # The same label twice (another label on a second row is a second character).
    labels.write_text("file,character\nc0/00.png,red\nc0/00.png,red\n")
    expect_error(
        capsys,
        ["evaluate", str(coll), "--labels", str(labels), "-q"],
        2,
        r"labels.csv:3: c0/00.png is listed again with no new label \(first at line 2\)",
    )


def test_errors_in_a_real_process_have_no_traceback_unless_debug(tmp_path):
    (tmp_path / "plain").mkdir()
    done = lookalike("query", str(tmp_path / "plain"), "x.png")
    assert done.returncode == 2
    assert done.stderr.startswith("lookalike: error: ") and "Traceback" not in done.stderr
    assert "not a lookalike collection" in done.stderr
    debug = lookalike("--debug", "query", str(tmp_path / "plain"), "x.png")
    assert (
        debug.returncode == 1 and "Traceback" in debug.stderr and "CollectionError" in debug.stderr
    )


# --- two writers: the second refuses (exit 3) or waits; a dead holder frees the lock --------

HOLD_LOCK = """
import sys, time
from lookalike.store.collection import Collection
with Collection.open(sys.argv[1]).write_lock():
    print("locked", flush=True)
    time.sleep(600)
"""


def hold_lock(coll: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(coll)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def someone_waits_for(caplog: pytest.LogCaptureFixture, holder: int) -> bool:
    """Whether a writer logged that it waits for the holder (filelock polls a non-blocking
    flock, so no waiter shows in /proc/locks)."""
    return any(f"waiting for pid {holder} to finish" in r.getMessage() for r in caplog.records)


def test_a_second_writer_refuses_or_waits_and_a_killed_holder_frees_the_lock(
    small_collection, capsys, caplog
):
    root, coll = small_collection
    caplog.set_level(logging.INFO, logger="lookalike.store.collection")
    draw(root / "c1" / "new.png", COLOURS[1], seed=7)
    holder = hold_lock(coll)
    try:
        expect_error(
            capsys,
            ["index", str(root), "-c", str(coll), *FAKE],
            3,
            rf"another `lookalike index` \(pid {holder.pid}\) is writing",
        )
        with pytest.raises(CollectionBusyError):
            Indexer(root, coll, fake_config(), progress=False).run()
        assert Searcher(coll).query("c0/00.png").matches  # readers are never blocked

        # --wait: blocks until the holder is gone, here killed without any cleanup.
        with ThreadPoolExecutor(1) as pool:
            waiter = pool.submit(main, ["index", str(root), "-c", str(coll), "--wait", *FAKE])
            deadline = time.monotonic() + 60
            while not someone_waits_for(caplog, holder.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # several of filelock's polls: it still waits
            assert someone_waits_for(caplog, holder.pid) and not waiter.done()
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            assert waiter.result(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait(10)
    assert "indexed: 10 images (1 embedded now" in capsys.readouterr().out

    holder = hold_lock(coll)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    (root / "c1" / "new.png").unlink()
    assert main(["index", str(root), "-c", str(coll), *FAKE]) == 0  # no stale lock left


# --- disk full: the message says so, and the committed state keeps answering -------------


def fail_writes_with_enospc(monkeypatch, when) -> list[Path]:
    """Make the atomic writers fail like a full disk for paths where `when(path)` is true."""
    real = fileio.atomic_write_bytes
    failed: list[Path] = []

    def full(path: Path, data: bytes) -> None:
        if when(Path(path)):
            failed.append(Path(path))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(fileio, "atomic_write_bytes", full)
    return failed


@pytest.mark.parametrize(
    ("stage", "when"),
    [
        ("staging", lambda p: p.parent.name == "staging"),
        ("commit", lambda p: p.name == "fused.npy"),
        ("manifest", lambda p: p.name == MANIFEST),
    ],
)
def test_disk_full_keeps_the_previous_collection(
    small_collection, monkeypatch, capsys, stage, when
):
    root, coll = small_collection
    before = answer(Searcher(coll).query("c1/01.png"))
    manifest = (coll / MANIFEST).read_text()
    colour_folder(root, per_colour=2, first=10)
    failed = fail_writes_with_enospc(monkeypatch, when)
    err = expect_error(capsys, ["index", str(root), "-c", str(coll), *FAKE], 2, "no space left")
    assert len(failed) == 1
    assert err == (
        f"lookalike: error: no space left on device while writing {failed[0]}; the collection "
        f"{coll} still answers queries from its last committed state: free some space and run "
        "the same command to resume\n"
    )
    assert (coll / MANIFEST).read_text() == manifest
    assert answer(Searcher(coll).query("c1/01.png")) == before
    monkeypatch.undo()
    assert main(["index", str(root), "-c", str(coll), *FAKE]) == 0  # space again: resumes
    assert "indexed: 15 images" in capsys.readouterr().out


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no `mount` command: cannot make a small file system here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_really_full_disk(tmp_path, capsys):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "16m")
    try:
        root = colour_folder(tmp_path / "photos", per_colour=4)
        coll = disk / "coll"
        assert main(["index", str(root), "-c", str(coll), *FAKE]) == 0
        before = answer(Searcher(coll).query("c2/01.png"))
        colour_folder(root, per_colour=4, first=10)
        filler = fill(disk)
        capsys.readouterr()
        expect_error(
            capsys,
            ["index", str(root), "-c", str(coll), *FAKE],
            2,
            "no space left on device while writing .*still answers queries",
        )
        assert answer(Searcher(coll).query("c2/01.png")) == before
        filler.unlink()
        assert main(["index", str(root), "-c", str(coll), *FAKE]) == 0
        assert "indexed: 24 images" in capsys.readouterr().out
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


# --- concurrent queries: threads and processes get the single-query answers -----------------


def test_concurrent_queries_match_single_queries(tmp_path, record_property):
    root = colour_folder(tmp_path / "photos", per_colour=6)
    coll = tmp_path / "coll"
    Indexer(root, coll, fake_config(), progress=False).run()
    outside = [
        save(Image.new("RGB", (40, 30), c), tmp_path / f"q{i}.png") for i, c in enumerate(COLOURS)
    ]
    queries = ["c0/01.png", "c1/03.png", "c2/05.png", "7", *map(str, outside)]
    single = {q: answer(Searcher(coll).query(q)) for q in queries}

    shared = Searcher(coll)
    work = [q for q in queries for _ in range(25)]
    random.Random(5).shuffle(work)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda q: (q, answer(shared.query(q))), work))
    assert all(result == single[q] for q, result in got)

    in_processes = [queries[0], queries[3], *queries[4:6]]  # by path, by id, outside images
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "query", str(coll), q, "--json"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for q in in_processes
    ]
    for q, child in zip(in_processes, children, strict=True):
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        results = json.loads(out)["results"]
        assert same_as_json(results, single[q])
    record_property("concurrent_queries_identical", len(got) + len(children))


# --- safe loading: nothing in a collection needs pickle ------------------------------------

PICKLE_MARKS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def check_file_without_pickle(path: Path) -> str:
    """Open one collection file the way lookalike does, with pickle refused; return its kind."""
    name = path.name
    if name.endswith(".npy"):
        np.load(path, allow_pickle=False)  # raises on object arrays
        return "npy"
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                data[key]  # each member is an .npy; loading one raises if it needs pickle
        return "npz"
    if name.endswith(".json"):
        json.loads(path.read_text())
        return "json"
    if name == "catalog.sqlite":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return "sqlite"
    if name in ("catalog.sqlite-wal", "catalog.sqlite-shm", ".lock", ".readers"):
        assert name != ".readers" or path.stat().st_size == 0  # a lock, never data
        return "sqlite/lock"
    assert path.parent.name == "index", f"unexpected file in a collection: {path}"
    assert path.read_bytes()[:2] not in PICKLE_MARKS, f"{path} looks like a pickle"
    return "native index"


def test_no_pickle_anywhere_in_a_collection(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "0")  # so that a cache is written too
    root = colour_folder(tmp_path / "photos", per_colour=3)
    kinds: set[str] = set()
    # Milvus keeps its vectors in its own store outside the collection folder.
    backends = [name for name in list_indexes() if name != "milvus"]
    for backend in backends:
        coll = tmp_path / backend
        assert main(["index", str(root), "-c", str(coll), "--index-backend", backend, *FAKE]) == 0
        assert main(["evaluate", str(coll), "--labels", "folders", "--preset", "v1", "-q"]) == 0
        assert main(["query", str(coll), "c0/01.png"]) == 0
        kinds |= {check_file_without_pickle(p) for p in coll.rglob("*") if p.is_file()}
    assert list((tmp_path / backend / "cache").rglob("*.npz"))  # evaluate's block cache was seen
    assert kinds == {"npy", "npz", "json", "sqlite", "sqlite/lock", "native index"}
    capsys.readouterr()


def test_no_pickle_in_the_source():
    risky = re.compile(r"\bimport (c?pickle|dill|joblib)\b|allow_pickle=True|weights_only=False")
    torch_load = re.compile(r"torch\.load\((?![^)]*weights_only=True)")
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not risky.search(text), path
        assert not torch_load.search(text), path
