"""How to type the `lookalike` command in this shell, for the commands the CLI prints.

`make demo` runs `.venv/bin/lookalike` without activating the environment, so a printed
"lookalike query ..." would fail with "command not found". The command printed is the
plain name only when the shell finds this same installation under it; otherwise the
console script beside this Python (as a path relative to the current folder when it lies
below it), or this Python with `-m lookalike`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

NAME = "lookalike"


def lookalike_command() -> str:
    """The shell words that run this installation's `lookalike` from the current folder."""
    interpreter = Path(sys.executable)
    found = shutil.which(NAME)
    if found and _runs_with(Path(found), interpreter):
        return NAME
    script = interpreter.parent / NAME
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(_as_typed(script))
    return f"{shlex.quote(str(interpreter))} -m {NAME}"


def activate_hint() -> str | None:
    """How to put `lookalike` on PATH, when this Python is a virtual environment's and the
    command is not on PATH yet; None otherwise."""
    if lookalike_command() == NAME or sys.prefix == sys.base_prefix:
        return None
    activate = Path(sys.prefix) / "bin" / "activate"
    if not activate.is_file():
        return None
    return f". {shlex.quote(_as_typed(activate))}"


def _runs_with(script: Path, interpreter: Path) -> bool:
    """Whether the console script `script` starts a Python of `interpreter`'s environment
    (its #! line names one in the same folder). Not samefile: every venv's python is a link
    to the same system Python."""
    try:
        with open(script, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    words = first[2:].decode(errors="replace").split()
    if not words:
        return False
    named = Path(os.path.normpath(Path(words[0]).absolute()))
    return named.parent == Path(os.path.normpath(interpreter.absolute())).parent


def _as_typed(path: Path) -> str:
    """`path` relative to the current folder when below it (.venv/bin/lookalike), else
    absolute; a relative path gets a leading ./ only where the shell needs one."""
    path = path.absolute()
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    text = relative.as_posix()
    return text if "/" in text else f"./{text}"
