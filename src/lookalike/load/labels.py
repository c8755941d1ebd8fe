"""Labels for evaluation and training: a CSV (file + label columns) or "folders".

A picture of several characters has several labels in a column: written `a|b` in one cell,
or as the file listed on several rows (their labels are merged). A label value is then
kept as its labels sorted and joined by `|`; `label_set` splits it again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lookalike.errors import LabelsError

LABEL_SEPARATOR = "|"


def label_set(value: str) -> frozenset[str]:
    """The labels of one cell: `a|b` is both a and b; empty is none."""
    return frozenset(part.strip() for part in value.split(LABEL_SEPARATOR) if part.strip())


def _joined(labels: Iterable[str]) -> str:
    return LABEL_SEPARATOR.join(sorted(set(labels)))


@dataclass(frozen=True)
class Task:
    """One label column: its name and its classes (index: the class id a model predicts)."""

    name: str
    classes: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "classes": list(self.classes)}


@dataclass
class Labels:
    """path (relative to the indexed root) -> {task: label}; a missing task means no label."""

    tasks: list[str]
    by_path: dict[str, dict[str, str]]

    def column(self, task: str | None = None) -> dict[str, str]:
        task = task or self.tasks[0]
        if task not in self.tasks:
            raise LabelsError(f"no label column {task!r}; the labels have {', '.join(self.tasks)}")
        return {p: row[task] for p, row in self.by_path.items() if row.get(task)}


def folder_labels(paths: Iterable[str]) -> Labels:
    by_path = {}
    for path in paths:
        parent = PurePosixPath(path).parent.name
        if parent:
            by_path[path] = {"character": parent}
    if not by_path:
        raise LabelsError("--labels folders: no image lies in a sub-folder, so there are no labels")
    return Labels(["character"], by_path)


def _normalise_path(raw: str, where: str) -> str:
    text = raw.strip().replace("\\", "/")
    if not text:
        raise LabelsError(f"{where}: empty file name")
    pure = PurePosixPath(text)
    if pure.is_absolute() or ".." in pure.parts:
        raise LabelsError(f"{where}: {raw!r} points outside the indexed folder")
    return pure.as_posix().removeprefix("./")


def read_labels_csv(path: Path, known_paths: Iterable[str] | None = None) -> Labels:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read labels ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LabelsError(f"{path}:{line}: not UTF-8 text (save the CSV as UTF-8)") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "file" not in [f.strip() for f in reader.fieldnames]:
        raise LabelsError(f"{path}:1: needs a header with a 'file' column and label columns")
    fields = [f.strip() for f in reader.fieldnames]
    reader.fieldnames = fields
    tasks = [f for f in fields if f and f != "file"]
    if not tasks:
        raise LabelsError(f"{path}:1: no label column beside 'file'")
    known = set(known_paths) if known_paths is not None else None
    by_path: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    unknown: list[str] = []
    for row in reader:
        line = reader.line_num
        where = f"{path}:{line}"
        if None in row:
            raise LabelsError(f"{where}: more cells than header columns")
        file = _normalise_path(row["file"] or "", where)
        if known is not None and file not in known:
            unknown.append(f"line {line}: {file}")
            continue
        cells = {t: label_set(row.get(t) or "") for t in tasks}
        if file in by_path:  # another row of the same picture: more of its labels
            if all(label_set(by_path[file][t]) >= cells[t] for t in tasks):
                raise LabelsError(
                    f"{where}: {file} is listed again with no new label "
                    f"(first at line {first_line[file]})"
                )
            cells = {t: cells[t] | label_set(by_path[file][t]) for t in tasks}
        by_path[file] = {t: _joined(cells[t]) for t in tasks}
        first_line.setdefault(file, line)
    if unknown:
        shown = "; ".join(unknown[:5]) + (
            f"; and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise LabelsError(f"{path}: files not in the collection: {shown}")
    if not by_path:
        raise LabelsError(f"{path}: no labelled rows")
    return Labels(tasks, by_path)


def load_labels(spec: str, known_paths: Iterable[str]) -> Labels:
    """`folders` (parent folder name = label) or the path of a labels CSV."""
    known = list(known_paths)
    if spec == "folders":
        return folder_labels(known)
    return read_labels_csv(Path(spec), known)
