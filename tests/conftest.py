"""Shared test plumbing: the real datasets beside the checkout, and the reliability figures.

Tests that read the real images of ``../shared/datasets`` get them through the
``shared_dataset`` fixture, which skips them with one clear reason in a checkout
without that folder (CI has it, so they still run there).

A test records a figure (fuzz inputs tried, kills survived, ...) with pytest's
`record_property(name, value)`; the figures of the run are listed in a "reliability
figures" section at the end of the terminal output, so docs/reliability.md can be
checked against a plain `pytest` run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# The Milvus tests open gRPC channels in this process; with gRPC's fork support on, a later
# test's subprocess can abort between fork and exec (epoll EBADF, grpc/grpc#43055).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _shared_dataset(name: str) -> Path:
    folder = SHARED_DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"needs ../shared/datasets/{name} (not in this checkout)")
    return folder


@pytest.fixture(scope="session")
def shared_dataset() -> Callable[[str], Path]:
    """`shared_dataset(NAME)`: the folder ../shared/datasets/NAME, or a skip without it."""
    return _shared_dataset


def pytest_terminal_summary(terminalreporter) -> None:
    figures = [
        (report.nodeid, name, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
    ]
    if figures:
        terminalreporter.section("reliability figures")
        for nodeid, name, value in figures:
            terminalreporter.write_line(f"{name} = {value}   ({nodeid})")
