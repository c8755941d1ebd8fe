"""Issue 20: the command line's conventions, mostly through the real command in child
processes (`python -m lookalike`, and the console script where it is installed).

Help for every argument, help lists read from the registries, the environment variables
documented, -V/--version, --quiet/--verbose before or after the command, the query named
as its results are, and the commands the demo prints runnable as printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import tomllib

from lookalike import __version__
from lookalike.cli import build_parser, main
from tests.cli.test_reliability_args import lookalike
from tests.end_to_end.test_reliability import colour_folder

ROOT = Path(__file__).resolve().parents[2]
FAKE = ["--backbone", "fake", "--detector", "none"]  # without test_reliability's -q
SMALL_DEMO = ["--characters", "2", "--per-character", "4", "--backbone", "fake"]


def parsers(parser: argparse.ArgumentParser, name: str = "lookalike"):
    """(name, parser) of `parser` and of every command under it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from parsers(sub, f"{name} {command}")


def test_every_argument_and_command_has_help():
    missing = []
    for name, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{name} {c}" for c in action.choices if c not in listed]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"arguments without help: {missing}"


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_lists_what_the_registries_hold(capsys, monkeypatch):
    from lookalike.config import PRESETS
    from lookalike.detect import DETECTORS
    from lookalike.embed import BACKBONES
    from lookalike.index import INDEXES

    for registry in (PRESETS, DETECTORS, BACKBONES, INDEXES):
        # A name registered now, on copies of the tables: what help lists is read from them.
        monkeypatch.setattr(registry, "_factories", dict(registry._factories))
        monkeypatch.setattr(registry, "_descriptions", dict(registry._descriptions))
        registry.register(f"probe-{registry.kind.replace(' ', '-')}")(lambda **_: None)
    text = " ".join(help_of(capsys, "index").split())
    for registry in (PRESETS, DETECTORS, BACKBONES, INDEXES):
        assert ", ".join(registry.names()) in text, (registry.kind, text)
        assert f"probe-{registry.kind.replace(' ', '-')}" in text
    assert "{presets}" not in text and "{backbones}" not in text
    assert "probe-backbone" in " ".join(help_of(capsys, "demo").split())


ENVIRONMENT_READ = re.compile(
    r"""os\.(?:environ\.get\(|getenv\(|environ\[)\s*["']([A-Z0-9_]+)["']"""
)


def test_every_environment_variable_read_is_documented():
    read = {
        name
        for path in (ROOT / "src" / "lookalike").rglob("*.py")
        for name in ENVIRONMENT_READ.findall(path.read_text(encoding="utf-8"))
    }
    assert {"LOOKALIKE_CACHE_DIR", "LOOKALIKE_RUNTIME"} <= read  # the scan finds them
    shown = lookalike("--help")
    assert shown.returncode == 0, shown.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in sorted(read):
        assert name in shown.stdout, f"{name} is read but not in lookalike --help"
        assert name in readme, f"{name} is read but not in README.md"


def console_script() -> Path | None:
    script = Path(sys.executable).parent / "lookalike"
    return script if script.is_file() else None


def test_version_short_and_long_from_both_entry_points():
    for flag in ("-V", "--version"):
        done = lookalike(flag)
        assert (done.returncode, done.stdout) == (0, f"lookalike {__version__}\n"), done.stderr
    script = console_script()
    if script is not None:
        done = subprocess.run([script, "-V"], capture_output=True, text=True, timeout=60)
        assert done.stdout == f"lookalike {__version__}\n", done.stderr


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return colour_folder(tmp_path_factory.mktemp("conventions") / "photos", per_colour=2)


def test_quiet_before_or_after_the_command_leaves_stderr_empty(photos, tmp_path):
    loud = lookalike("index", str(photos), "-c", str(tmp_path / "loud"), *FAKE)
    assert loud.returncode == 0, loud.stderr
    assert "img/s" in loud.stderr  # the progress bar, on stderr
    assert "indexed" in loud.stdout and "img/s" not in loud.stdout
    for argv in (
        ["-q", "index", str(photos), "-c", str(tmp_path / "before"), *FAKE],
        ["index", str(photos), "-c", str(tmp_path / "after"), *FAKE, "--quiet"],
    ):
        quiet = lookalike(*argv)
        assert (quiet.returncode, quiet.stderr) == (0, ""), argv
        assert quiet.stdout.splitlines()[1] == loud.stdout.splitlines()[1]  # "indexed: ..."


def test_verbose_turns_on_debug_logging_and_results_stay_on_stdout(photos, tmp_path):
    coll = tmp_path / "coll"
    assert lookalike("-q", "index", str(photos), "-c", str(coll), *FAKE).returncode == 0
    plain = lookalike("query", str(coll), "c0/00.png")
    assert (plain.returncode, plain.stderr) == (0, "")
    for argv in (["-v", "query", str(coll), "c0/00.png"], ["query", str(coll), "c0/00.png", "-v"]):
        verbose = lookalike(*argv)
        assert verbose.returncode == 0, verbose.stderr
        assert verbose.stdout == plain.stdout
        assert "lookalike: debug: " in verbose.stderr, verbose.stderr
    both = lookalike("-q", "-v", "info", str(coll))
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_the_query_is_named_as_its_results_are_in_the_table_and_the_sheet(
    photos, tmp_path, capsys, monkeypatch
):
    coll = tmp_path / "coll"
    assert lookalike("-q", "index", str(photos), "-c", str(coll), *FAKE).returncode == 0
    from lookalike.search.searcher import Searcher

    item = Searcher(coll).resolve("c0/00.png")[0]
    captions = []

    def capture(head, tiles, out):  # the sheet's tiles, as query_sheet hands them over
        captions.append((head.caption, [t.caption for t in tiles]))
        from lookalike.render.sheets import WrittenSheet

        return WrittenSheet(Path(out))

    monkeypatch.setattr("lookalike.search.sheet.contact_sheet", capture)
    for asked in ("c0/00.png", str(item), str(photos / "c0" / "00.png")):
        assert main(["query", str(coll), asked, "--sheet", str(tmp_path / "q.png")]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert first == f"query: c0/00.png (id {item})", (asked, first)
        query_caption, result_captions = captions.pop()
        assert query_caption == "c0/00.png", asked
        assert all(re.fullmatch(r"c\d/\d\d\.png", c) for c in result_captions), result_captions
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((photos / "c1" / "01.png").read_bytes())
    assert main(["query", str(coll), str(outside), "--sheet", str(tmp_path / "q.png")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"query: {outside}"
    assert captions.pop()[0] == str(outside)
    # The JSON names it alike, as `query_path`.
    for asked, named in (("c0/00.png", "c0/00.png"), (str(item), "c0/00.png")):
        assert main(["query", str(coll), asked, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["query_path"] == named
    assert main(["query", str(coll), str(outside), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["query_path"] == str(outside)


def path_without_lookalike() -> str:
    """$PATH less the folders that hold a `lookalike` command: a shell not activated."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "lookalike").exists())


def test_the_command_the_demo_prints_runs_as_printed_without_an_activated_venv(tmp_path):
    env = {**os.environ, "PATH": path_without_lookalike()}
    demo = subprocess.run(
        [sys.executable, "-m", "lookalike", "-q", "demo", "--out", "d", *SMALL_DEMO],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr == ""
    tried = [line for line in demo.stdout.splitlines() if line.startswith("try:")]
    assert len(tried) == 1, demo.stdout
    command = tried[0].removeprefix("try:").strip()
    assert not command.startswith("lookalike "), command  # not on this PATH
    done = subprocess.run(
        command, shell=True, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 0, (command, done.stderr)
    assert done.stdout.startswith("query: ") and (tmp_path / "q.png").is_file()


def test_the_plain_name_is_printed_where_the_shell_finds_this_installation(tmp_path):
    code = "from lookalike.invocation import lookalike_command; print(lookalike_command())"
    script = console_script()
    if script is None:
        pytest.skip("no console script beside this Python (not an installed environment)")
    on_path = os.pathsep.join([str(script.parent), path_without_lookalike()])
    for path, expected in ((on_path, "lookalike"), (path_without_lookalike(), None)):
        env = {**os.environ, "PATH": path}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        printed = done.stdout.strip()
        if expected:
            assert printed == expected
        else:
            assert shlex.split(printed) == [str(script)]  # not below tmp_path: absolute


def test_the_package_declares_its_licence_the_way_setuptools_no_longer_warns_about():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    assert meta["license"] == "Apache-2.0"  # an SPDX string, not the deprecated table
    for name in meta["license-files"]:
        assert "Apache License" in (ROOT / name).read_text(encoding="utf-8")
    assert "setuptools>=77" in project["build-system"]["requires"]  # reads PEP 639


def test_quiet_serve_answers_without_a_request_log(photos, tmp_path):
    coll = tmp_path / "coll"
    assert lookalike("-q", "index", str(photos), "-c", str(coll), *FAKE).returncode == 0
    cmd = [sys.executable, "-m", "lookalike", "-q", "serve", str(coll), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split(" at ")[1].strip()
        with urllib.request.urlopen(url + "api/info", timeout=30) as answer:
            assert answer.status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "GET" not in err and "/api/info" not in err, err


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("presets", {"default", "photo", "v1", "v2", "v3", "v4", "v5"}),
        ("detectors", {"animeface", "haar", "none"}),
        ("backbones", {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"}),
        ("indexes", {"auto", "exact", "annoy", "hnswlib", "usearch", "faiss", "milvus"}),
    ],
)
def test_each_registry_lists_its_names_one_line_each(command, expected):
    done = lookalike(command)
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert expected <= set(names) and len(names) == len(set(names))
    # Each with its one-line description from the registry.
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines if line.split()[0] in expected)
