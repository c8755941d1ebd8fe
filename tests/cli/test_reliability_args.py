"""Issue 15, item 12: odd arguments and an early Ctrl-C, through the real command line.

Every case runs `python -m lookalike` (what the `lookalike` console script runs) in a
child process: exit code 2 (130 for Ctrl-C) and one line on stderr, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.end_to_end.test_reliability import FAKE, colour_folder

ROOT = Path(__file__).resolve().parents[2]


def lookalike(*args: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `lookalike` command in a child process; bytes arguments reach argv undecoded."""
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


def indexed_colour_folder(base: Path) -> tuple[Path, Path]:
    """A small folder of colour pictures under `base` and its collection (fake backbone)."""
    root = colour_folder(base / "photos", per_colour=2)
    coll = base / "coll"
    assert lookalike("index", str(root), "-c", str(coll), *FAKE).returncode == 0
    return root, coll


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    return indexed_colour_folder(tmp_path_factory.mktemp("args"))


ODD_ARGUMENTS = {
    "query over 255 bytes": (["query", "{coll}", "a" * 300], "longer than 255 bytes"),
    # Not UTF-8 and not there: named escaped (a name that is there is answered, see
    # test_reliability_files.py).
    "query not UTF-8": (["query", "{coll}", b"x\xff.png"], "x\\xff.png: not an image file"),
    "batch size 0": (["index", "{root}", "-c", "{coll}", "--batch-size", "0"], "--batch-size"),
    "batch size -1": (["index", "{root}", "-c", "{coll}", "--batch-size", "-1"], "--batch-size"),
    "trees 0": (["index", "{root}", "-c", "{coll}", "--trees", "0"], "--trees"),
    "search-k 0": (["index", "{root}", "-c", "{coll}", "--search-k", "0"], "--search-k"),
    "k 0": (["query", "{coll}", "c0/00.png", "-k", "0"], "-k"),
    "port 70000": (["serve", "{coll}", "--port", "70000"], "0 to 65535"),
    "port -1": (["serve", "{coll}", "--port", "-1"], "--port"),
}


def test_odd_arguments_exit_2_with_one_line(collection, record_property):
    root, coll = collection
    for case, (argv, words) in ODD_ARGUMENTS.items():
        argv = [a.format(root=root, coll=coll) if isinstance(a, str) else a for a in argv]
        err = one_line_error(lookalike(*argv, timeout=60))
        assert words in err, (case, err)
    record_property("odd_argument_cases", len(ODD_ARGUMENTS))


def test_trees_is_no_longer_ignored(tmp_path):
    root = colour_folder(tmp_path / "photos", per_colour=2)
    coll = tmp_path / "coll"
    assert lookalike("index", str(root), "-c", str(coll), *FAKE, "--trees", "3").returncode == 0
    info = lookalike("info", str(coll))
    assert "'n_trees': 3" in info.stdout, info.stdout


# A child that interrupts itself (SIGINT, as Ctrl-C sends) at the first import of one
# module, then runs the command as `python -m lookalike` does.
INTERRUPT_AT_IMPORT = """
import os, runpy, signal, sys
target = sys.argv.pop(1)

class InterruptAt:
    def find_spec(self, name, path=None, module=None):
        if name == target:
            sys.meta_path.remove(self)
            os.write(1, b"fired")
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAt())
sys.argv[0] = "lookalike"
runpy.run_module("lookalike", run_name="__main__", alter_sys=True)
"""

# Modules the command imports once it runs (after the CLI's own imports).
LATER_IMPORTS = ["lookalike.search.searcher", "numpy", "sqlite3", "PIL.Image"]


def modules_the_cli_imports() -> list[str]:
    # Not the package itself: Python imports it before the entry point's first line runs.
    code = "import sys, lookalike; s = set(sys.modules); import lookalike.cli; "
    code += "print(*set(sys.modules) - s)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return sorted(done.stdout.split())


def test_ctrl_c_while_starting_exits_130_with_one_line(collection, record_property):
    _, coll = collection
    fired = 0
    for module in [*modules_the_cli_imports(), *LATER_IMPORTS]:
        done = subprocess.run(
            [sys.executable, "-c", INTERRUPT_AT_IMPORT, module, "query", str(coll), "c0/00.png"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if not done.stdout.startswith("fired"):
            continue  # already imported before the command started: no moment to test
        fired += 1
        assert done.returncode == 130, (module, done.returncode, done.stderr)
        assert done.stderr == "interrupted\n", (module, done.stderr)
    record_property("ctrl_c_import_moments", fired)
    assert fired >= 20


def test_the_console_script_is_the_entry_that_handles_an_early_ctrl_c():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lookalike"] == "lookalike.__main__:main"
