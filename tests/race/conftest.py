"""The race suite's counts, printed after the test session.

Each race test records what it did (operations, refusals, conflicts and
retries, kills) with the ``record`` fixture; the totals are printed at the
end of the run (``race suite counts``) so that CI logs keep them.
"""

from __future__ import annotations

import typing as ty

import pytest

_COUNTS: list[tuple[str, dict[str, ty.Any]]] = []


@pytest.fixture
def record(request: pytest.FixtureRequest) -> ty.Callable[..., None]:
    """``record(ops=..., refused=...)``: counts of this test, for the log."""
    def _record(**counts: ty.Any) -> None:
        _COUNTS.append((request.node.name, counts))
    return _record


def pytest_terminal_summary(terminalreporter: ty.Any) -> None:
    if not _COUNTS:
        return
    terminalreporter.section("race suite counts")
    for name, counts in _COUNTS:
        terminalreporter.write_line("%s: %s" % (name, ", ".join(
            "%s=%s" % item for item in counts.items())))
