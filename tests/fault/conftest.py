"""Print what the fault suite did: kills per database, by point, and time."""

from __future__ import annotations

import typing as ty


def pytest_terminal_summary(terminalreporter: ty.Any) -> None:
    from tests.fault import test_kills

    if not test_kills.RESULTS:
        return
    write = terminalreporter.write_line
    write("fault injection (kill -9, then host reconcile --apply, seed %d):" % test_kills.SEED)
    for backend, tally in sorted(test_kills.RESULTS.items()):
        write("  %-10s kills %3d (named %d, random %d) of %d commands; %d reconciles "
              "(%d fixes), %d consistency checks, %.1f s" % (
                  backend, tally["kills"], tally["named"], tally["random_kills"],
                  tally["commands"], tally["reconciles"], tally["fixed"], tally["checks"],
                  tally["seconds"]))
        points = ", ".join("%s x%d" % item for item in sorted(tally["by_point"].items()))
        write("             named points: %s" % points)
