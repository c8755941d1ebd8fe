"""Issue 15, the on-disk collection: a full disk, a read-only collection, another account,
a missing or damaged part, the Milvus store from a new process, an empty folder.

Every check runs real `lookalike` processes (index in one, query in another), with the
fake backbone and no detector, on small generated folders.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.end_to_end.test_reliability import FAKE, colour_folder, fill, mount_tmpfs

NOBODY = 65534
GEN = "generations/gen-000001"


def cli(
    *args: object, user: int | None = None, umask: int | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process, optionally as another account or umask."""

    def before() -> None:
        if umask is not None:
            os.umask(umask)
        if user is not None:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)

    python, env = (sys.executable, None) if user is None else python_for_others()
    return subprocess.run(
        [python, "-m", "lookalike.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=before,
        env=env,
    )


def open_to_others(path: Path) -> bool:
    """Whether another account can reach and read `path` (o+x on every folder above it)."""
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o004)


def python_for_others() -> tuple[str, dict[str, str]]:
    """An interpreter another account can run, seeing this one's packages (this one may lie
    in root's private home; then the system's Python of the same version, if any)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        Path(sys.executable),
        Path("/usr/bin") / version,
        Path("/usr/local/bin") / version,
    ]
    python = next((p for p in candidates if p.exists() and open_to_others(p)), None)
    if python is None:
        pytest.skip(f"no {version} that another account can run")
    paths = [p for p in sys.path if p and Path(p).is_dir() and open_to_others(Path(p))]
    env = dict(os.environ, HOME=tempfile.gettempdir(), PYTHONPATH=os.pathsep.join(paths))
    return str(python), env


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2 and exactly one line on stderr, with no traceback, containing `words` (in any
    case: the sheet writer says "No space left on device" as the OS does)."""
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err, done.stdout)
    assert err.startswith("lookalike: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word.lower() in err.lower(), (word, err)
    return err


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.returncode, done.stderr, done.stdout)
    assert "Traceback" not in done.stderr
    return done


def results(done: subprocess.CompletedProcess[str]) -> list[tuple[str, float]]:
    """Paths and scores of a `query --json` answer (ids may change when a catalog is rebuilt)."""
    return [(r["path"], round(r["score"], 5)) for r in json.loads(ok(done).stdout)["results"]]


def index(root: Path, coll: Path, *extra: object, **kw) -> subprocess.CompletedProcess[str]:
    return cli("index", root, "-c", coll, *FAKE, *extra, **kw)


def leave_catalog_in_wal_mode(coll: Path) -> None:
    """As a collection written by an older lookalike: WAL mode, no -wal/-shm files beside it."""
    with sqlite3.connect(coll / "catalog.sqlite") as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    db.close()
    assert not list(coll.glob("catalog.sqlite-*"))


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """A small file system of its own (a 16 MiB tmpfs; skipped where mounting is impossible)."""
    folder = tmp_path / "disk"
    mount_tmpfs(folder, "16m")
    try:
        yield folder
    finally:
        unmount(folder)


# --- item 3: a full disk, across processes ----------------------------------------------


@pytest.mark.slow  # a tmpfs filled, then six processes on it: about 8 s each
@pytest.mark.parametrize("catalog", ["as indexed", "left in WAL mode"])
def test_a_full_disk_across_processes(disk, tmp_path, catalog, record_property):
    root = colour_folder(tmp_path / "photos", per_colour=4)
    coll = disk / "coll"
    ok(index(root, coll))
    before = results(cli("query", coll, "c2/01.png", "--json"))
    outside = root / "c1" / "11.png"
    colour_folder(root, per_colour=2, first=10)
    by_image = results(cli("query", coll, outside, "--json"))
    if catalog == "left in WAL mode":
        leave_catalog_in_wal_mode(coll)
    filler = fill(disk)

    assert results(cli("query", coll, "c2/01.png", "--json")) == before
    assert results(cli("query", coll, outside, "--json")) == by_image
    one_line_error(index(root, coll), "no space left on device", "still answers queries")
    assert "indexed:    12 images" in ok(cli("info", coll)).stdout
    ok(cli("info", coll, "--errors"))
    evaluated = cli("evaluate", coll, "--labels", "folders", "-q")
    if evaluated.returncode != 0:  # it computes and caches other presets' blocks
        one_line_error(evaluated, "no space left on device")
    record_property("full_disk_evaluate", "answers" if evaluated.returncode == 0 else "exit 2")
    one_line_error(
        cli("query", coll, "c2/01.png", "--sheet", disk / "sheet.png"), "no space left on device"
    )
    assert results(cli("query", coll, "c2/01.png", "--json")) == before

    filler.unlink()
    assert "indexed: 18 images" in ok(index(root, coll)).stdout
    assert len(results(cli("query", coll, "c2/01.png", "--json"))) == 4


# --- item 4 (and 12): a read-only collection ----------------------------------------------


def serve_and_count(coll: Path, python: str = sys.executable, **kw) -> int:
    """Start `lookalike serve` on a free port, fetch /api/info, stop it; the item count."""
    server = subprocess.Popen(
        [python, "-m", "lookalike.cli", "serve", str(coll), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"at (http://\S+)", line)
        assert match, (line, server.stderr.read() if server.stderr else "")
        with urllib.request.urlopen(match.group(1).rstrip("/") + "/api/info", timeout=30) as r:
            return int(json.loads(r.read())["count"])
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)


@pytest.mark.parametrize("catalog", ["as indexed", "left in WAL mode"])
def test_a_read_only_mount_answers_and_index_says_why_it_cannot(disk, tmp_path, catalog):
    root = colour_folder(tmp_path / "photos", per_colour=3)
    coll = disk / "coll"
    ok(index(root, coll))
    before = results(cli("query", coll, "c0/01.png", "--json"))
    if catalog == "left in WAL mode":
        leave_catalog_in_wal_mode(coll)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

    assert results(cli("query", coll, "c0/01.png", "--json")) == before
    ok(cli("query", coll, root / "c2" / "00.png"))
    assert "indexed:    9 images" in ok(cli("info", coll)).stdout
    assert serve_and_count(coll) == 9
    one_line_error(index(root, coll), "read-only", str(coll))
    one_line_error(index(root, disk / "new"), "read-only", str(disk / "new"))


def tree(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under `folder`: (size, mtime, mode), to see that nothing changed."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        found[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another account can reach (pytest's own tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="lookalike-shared-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("made", ["with umask 022", "with umask 077, then chmod -R a+rX"])
def test_another_account_can_query_a_readable_collection(shared_dir, made):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a query as another account")
    private = made.startswith("with umask 077")
    umask = 0o077 if private else 0o022
    root = shared_dir / "photos"
    previous = os.umask(umask)  # the pictures too are written under that umask
    try:
        colour_folder(root, per_colour=3)
    finally:
        os.umask(previous)
    coll = shared_dir / "coll"
    ok(index(root, coll, umask=umask))
    ok(cli("query", coll, "c0/01.png", "--sheet", shared_dir / "sheet.png", umask=umask))
    before = results(cli("query", coll, "c0/01.png", "--json"))
    if private:
        subprocess.run(["chmod", "-R", "a+rX", str(shared_dir)], check=True)
    else:  # files follow the umask like any other program's
        modes = {p.name: p.stat().st_mode & 0o777 for p in coll.rglob("*") if p.is_file()}
        assert set(modes.values()) == {0o644}, modes
        assert (shared_dir / "sheet.png").stat().st_mode & 0o777 == 0o644
    files = tree(coll)

    assert results(cli("query", coll, "c0/01.png", "--json", user=NOBODY)) == before
    ok(cli("query", coll, root / "c1" / "02.png", user=NOBODY))
    assert "indexed:    9 images" in ok(cli("info", coll, user=NOBODY)).stdout
    python, env = python_for_others()
    assert serve_and_count(coll, python, preexec_fn=lambda: os.setuid(NOBODY), env=env) == 9
    one_line_error(index(root, coll, user=NOBODY), "Permission denied", str(coll))
    assert tree(coll) == files  # the other account changed nothing


# --- items 5 and 6: missing or damaged parts --------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path, list[tuple[str, float]]]:
    """(root, collection, the answer to `query COLL c0/00.png`), built once for all kinds."""
    base = tmp_path_factory.mktemp("pristine")
    root = colour_folder(base / "photos", per_colour=3)
    coll = base / "coll"
    ok(index(root, coll))
    return root, coll, results(cli("query", coll, "c0/00.png", "--json"))


def copy_of(pristine, tmp_path: Path) -> Path:
    coll = tmp_path / "coll"
    shutil.copytree(pristine[1], coll, symlinks=True)
    return coll


def remove(rel: str) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        path = coll / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    return do


def truncate(rel: str) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        data = (coll / rel).read_bytes()
        (coll / rel).write_bytes(data[: len(data) // 2])

    return do


def write(rel: str, data: bytes) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        (coll / rel).parent.mkdir(parents=True, exist_ok=True)
        (coll / rel).write_bytes(data)

    return do


def folder_instead(rel: str) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        remove(rel)(coll)
        (coll / rel).mkdir()
        (coll / rel / "something").write_text("x")

    return do


def file_instead(rel: str) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        remove(rel)(coll)
        (coll / rel).write_text("not a folder")

    return do


def edit_manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        manifest = json.loads((coll / "manifest.json").read_text())
        (coll / "manifest.json").write_text(json.dumps(change(manifest)))

    return do


def without(key: str) -> Callable[[dict], dict]:
    return lambda m: {k: v for k, v in m.items() if k != key}


def overwrite_start(rel: str, size: int) -> Callable[[Path], None]:
    def do(coll: Path) -> None:
        with open(coll / rel, "r+b") as f:
            f.write(b"\xa5" * size)

    return do


def staged_chunk(arrays: Callable[[Path], dict[str, np.ndarray]]) -> Callable[[Path], None]:
    """A chunk left in staging/ by a killed run, with the arrays given (well-formed npz)."""

    def do(coll: Path) -> None:
        (coll / "staging").mkdir()
        np.savez(coll / "staging" / "chunk-0000000.npz", **arrays(coll))

    return do


def first_id(coll: Path) -> np.ndarray:
    return np.load(coll / GEN / "ids.npy")[:1]


def chunk_rows_mismatch(coll: Path) -> dict[str, np.ndarray]:
    blocks = {p.stem: np.load(p)[:1] for p in (coll / GEN / "blocks").glob("*.npy")}
    ids = np.load(coll / GEN / "ids.npy")[:3]
    return {"ids": ids, **{f"block:{k}": v for k, v in blocks.items()}}


GARBAGE = bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8))


@dataclass(frozen=True)
class Damage:
    do: Callable[[Path], None]
    part: str  # what the messages must name
    query_fails: bool = True
    info_fails: bool = True
    # What `index` does: None, it repairs the collection itself (a warning names the part);
    # else the path it tells the user to delete (the test deletes it, and index then repairs).
    delete: str | None = None


DAMAGE: dict[str, Damage] = {
    "catalog missing": Damage(remove("catalog.sqlite"), "catalog.sqlite"),
    "catalog empty": Damage(write("catalog.sqlite", b""), "catalog.sqlite"),
    "catalog garbage": Damage(
        write("catalog.sqlite", GARBAGE), "catalog.sqlite", delete="catalog.sqlite"
    ),
    "catalog truncated": Damage(
        truncate("catalog.sqlite"), "catalog.sqlite", delete="catalog.sqlite"
    ),
    "catalog header overwritten": Damage(
        overwrite_start("catalog.sqlite", 100), "catalog.sqlite", delete="catalog.sqlite"
    ),
    "catalog is a folder": Damage(
        folder_instead("catalog.sqlite"), "catalog.sqlite", delete="catalog.sqlite"
    ),
    "manifest empty": Damage(write("manifest.json", b""), "manifest.json", delete="manifest.json"),
    "manifest truncated": Damage(
        truncate("manifest.json"), "manifest.json", delete="manifest.json"
    ),
    "manifest is []": Damage(
        write("manifest.json", b"[]"), "manifest.json", delete="manifest.json"
    ),
    "manifest lacks config": Damage(
        edit_manifest(without("config")), "manifest.json", delete="manifest.json"
    ),
    "manifest lacks root": Damage(
        edit_manifest(without("root")), "manifest.json", delete="manifest.json"
    ),
    "manifest config damaged": Damage(
        edit_manifest(lambda m: {**m, "config": {"preset": "default"}}),
        "manifest.json",
        delete="manifest.json",
    ),
    "manifest names a bad generation": Damage(
        edit_manifest(lambda m: {**m, "generation": "latest"}),
        "manifest.json",
        delete="manifest.json",
    ),
    "manifest names a missing generation": Damage(
        edit_manifest(lambda m: {**m, "generation": "gen-000099"}), "gen-000099"
    ),
    "generation folder deleted": Damage(remove(GEN), "gen-000001"),
    "generations is a file": Damage(
        file_instead("generations"), "generations", delete="generations"
    ),
    "ids.npy missing": Damage(remove(f"{GEN}/ids.npy"), "ids.npy"),
    "ids.npy truncated": Damage(truncate(f"{GEN}/ids.npy"), "ids.npy"),
    "ids.npy garbage": Damage(write(f"{GEN}/ids.npy", GARBAGE), "ids.npy"),
    "ids.npy of other rows": Damage(
        lambda c: np.save(c / GEN / "ids.npy", np.load(c / GEN / "ids.npy")[:-1]), "ids.npy"
    ),
    "head_boxes.npy truncated": Damage(truncate(f"{GEN}/head_boxes.npy"), "head_boxes.npy"),
    "fused.npy missing": Damage(remove(f"{GEN}/fused.npy"), "fused.npy"),
    "fused.npy truncated": Damage(truncate(f"{GEN}/fused.npy"), "fused.npy"),
    "block .npy missing": Damage(
        remove(f"{GEN}/blocks/head.gem.npy"), "head.gem.npy", query_fails=False
    ),
    "block .npy truncated": Damage(
        truncate(f"{GEN}/blocks/head.gem.npy"), "head.gem.npy", query_fails=False
    ),
    "fuser.npz missing": Damage(remove(f"{GEN}/fuser.npz"), "fuser.npz"),
    "fuser.npz truncated": Damage(truncate(f"{GEN}/fuser.npz"), "fuser.npz"),
    "index file truncated": Damage(truncate(f"{GEN}/index/exact.npy"), "exact.npy"),
    "index metadata missing": Damage(remove(f"{GEN}/index/auto.json"), "index"),
    "index metadata garbage": Damage(write(f"{GEN}/index/auto.json", b"{\x00"), "auto.json"),
    "staged chunk garbage": Damage(
        write("staging/chunk-0000000.npz", GARBAGE),
        "chunk-0000000.npz",
        query_fails=False,
        info_fails=False,
    ),
    "staged chunk without blocks": Damage(
        staged_chunk(lambda c: {"ids": first_id(c)}),
        "chunk-0000000.npz",
        query_fails=False,
        info_fails=False,
    ),
    "staged chunk rows do not match": Damage(
        staged_chunk(chunk_rows_mismatch),
        "chunk-0000000.npz",
        query_fails=False,
        info_fails=False,
    ),
    "staging is a file": Damage(
        file_instead("staging"), "staging", query_fails=False, info_fails=False, delete="staging"
    ),
    ".lock is a folder": Damage(
        folder_instead(".lock"), ".lock", query_fails=False, info_fails=False, delete=".lock"
    ),
}


def expect(done: subprocess.CompletedProcess[str], fails: bool, part: str) -> str:
    if fails:
        one_line_error(done, part)
        return "exit 2"
    ok(done)
    return "answers"


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_collection_is_one_clear_line_and_index_repairs_it(
    pristine, tmp_path, kind, record_property
):
    root, _, answer = pristine
    damage = DAMAGE[kind]
    coll = copy_of(pristine, tmp_path)
    damage.do(coll)
    files = tree(coll)

    query = cli("query", coll, "c0/00.png", "--json")
    by_query = expect(query, damage.query_fails, damage.part)
    if not damage.query_fails:
        assert results(query) == answer
    by_info = expect(cli("info", coll), damage.info_fails, damage.part)
    assert tree(coll) == files, "a reader changed the collection"

    done = index(root, coll)
    if damage.delete:
        err = one_line_error(done, damage.part, "delete")
        assert str(coll / damage.delete) in err
        remove(damage.delete)(coll)
        done = index(root, coll)
        by_index = f"says to delete {damage.delete}"
    else:
        by_index = "repairs"
    ok(done)
    assert damage.part in done.stderr or damage.delete, done.stderr  # a warning says what
    assert results(cli("query", coll, "c0/00.png", "--json")) == answer
    ok(cli("info", coll))
    assert not list(coll.glob("staging/*"))  # no staged chunk left
    record_property("damage", f"{kind}: query {by_query}, info {by_info}, index {by_index}")
    if kind == next(iter(DAMAGE)):
        record_property("damage_kinds_tried", len(DAMAGE))


@pytest.mark.parametrize("kind", ["catalog missing", "catalog empty"])
def test_serve_refuses_a_collection_without_its_catalog(pristine, tmp_path, kind):
    coll = copy_of(pristine, tmp_path)
    DAMAGE[kind].do(coll)
    files = tree(coll)
    server = cli("serve", coll, "--port", "0", timeout=60)
    one_line_error(server, "catalog.sqlite", "lookalike index")
    assert tree(coll) == files


def test_a_damaged_block_cache_is_computed_again(pristine, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE_MIN_PICTURES", "0")  # these few pictures keep one
    coll = copy_of(pristine, tmp_path)
    evaluate = ("evaluate", coll, "--labels", "folders", "--preset", "v1", "--json", "-q")
    first = ok(cli(*evaluate)).stdout
    # The blocks v1 reads (the index run cached the others the default comparison needs).
    cached = [p for p in coll.glob("cache/*/*.npz") if p.stem in ("whole.logits", "whole.hsv")]
    assert len(cached) == 2
    for path in cached:
        truncate(str(path.relative_to(coll)))(coll)
    again = ok(cli(*evaluate))
    assert again.stdout == first
    assert all(str(path) in again.stderr for path in cached), again.stderr


# --- the Milvus store, from new processes -----------------------------------------------


@pytest.mark.slow  # Milvus Lite started in two processes: about 7 s
def test_milvus_store_answers_a_query_from_a_new_process(tmp_path):
    pytest.importorskip("milvus_lite")
    root = colour_folder(tmp_path / "photos", per_colour=3)
    coll = tmp_path / "coll"
    store = f"milvus:{tmp_path / 'store.db'}"
    ok(index(root, coll, "--store", store, timeout=300))
    found = results(cli("query", coll, "c1/00.png", "--json", "-k", "2", timeout=300))
    assert [path.split("/")[0] for path, _ in found] == ["c1", "c1"]
    colour_folder(root, per_colour=1, first=5)
    ok(index(root, coll, timeout=300))  # a second run in a new process adds to the store
    found = results(cli("query", coll, "c2/05.png", "--json", "-k", "3", timeout=300))
    assert [path.split("/")[0] for path, _ in found] == ["c2"] * 3


# --- item 12 and an empty folder: refused, nothing left behind -----------------------------


def test_an_empty_folder_makes_no_collection(tmp_path):
    (tmp_path / "empty").mkdir()
    coll = tmp_path / "coll"
    one_line_error(index(tmp_path / "empty", coll), "no image", str(tmp_path / "empty"))
    assert not coll.exists() and list(tmp_path.iterdir()) == [tmp_path / "empty"]
    one_line_error(cli("query", coll, "x.png"), "no such collection")


def test_only_unreadable_files_leave_a_collection_that_says_so(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    coll = tmp_path / "coll"
    one_line_error(index(root, coll), "no image could be indexed")
    one_line_error(cli("query", coll, "x.png"), "info", "--errors")
    assert "broken.png" in ok(cli("info", coll, "--errors")).stdout


def test_index_into_a_regular_file_is_refused(tmp_path):
    root = colour_folder(tmp_path / "photos", per_colour=1)
    (tmp_path / "file").write_text("mine")
    one_line_error(index(root, tmp_path / "file"), "not a folder", str(tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "mine"


def use_up_inodes(disk: Path, leave: int) -> None:
    """Empty files until the file system has no inode left, then free `leave` of them."""
    made = []
    try:
        while True:
            made.append(disk / f"inode{len(made)}")
            made[-1].touch()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        made.pop()
    for path in made[:leave]:
        path.unlink()


@pytest.mark.slow  # 35 points of exhaustion, a new process each: about 30 s
def test_out_of_inodes_while_creating_a_collection(tmp_path, record_property):
    root = colour_folder(tmp_path / "photos", per_colour=1)
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "16m,nr_inodes=64")
    try:
        failed = 0
        for leave in range(40):  # running out at each step of making a collection
            coll = disk / "coll"
            use_up_inodes(disk, leave)
            done = index(root, coll)
            if done.returncode == 0:
                break
            failed += 1
            one_line_error(done, "no space left on device", str(coll))
            # Nothing half-made: no collection, or one that answers (and says it is empty).
            if coll.exists():
                ok(cli("info", coll))
            for path in disk.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        assert failed >= 3 and done.returncode == 0
        record_property("inode_exhaustion_points", failed)
    finally:
        unmount(disk)
