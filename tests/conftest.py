"""Shows the figures tests record (fuzz inputs tried, kills survived, ...) in every run's output.

A test records one with pytest's `record_property(name, value)`; the figures of the
run are listed in a "reliability figures" section at the end of the terminal output,
so docs/reliability.md can be checked against a plain `pytest` run.
"""

from __future__ import annotations


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
