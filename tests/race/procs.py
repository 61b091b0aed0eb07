"""Start worker processes together and collect what each one reports.

Workers are forked (no interpreter start-up to dilute the race).  Each
one first runs ``prepare(*args)`` (open the database, read the node, as a
worker would before a request arrives), then waits at a barrier, then runs
the action ``prepare`` returned: the actions start at the same moment.
A worker's exception is reported, not raised: the test counts outcomes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue as queue_mod
import time
import traceback
import typing as ty

CTX = multiprocessing.get_context("fork")


@dataclasses.dataclass
class Outcome:
    """What one worker returned, or the error it raised."""

    index: int
    value: ty.Any = None
    error: str | None = None
    error_type: str | None = None
    exit_code: int | None = None


def _entry(prepare: ty.Callable[..., ty.Callable[[], ty.Any]],
           barrier: ty.Any, out: ty.Any, index: int,
           args: tuple[ty.Any, ...]) -> None:
    try:
        action = prepare(*args)
        barrier.wait(timeout=120)
        out.put(Outcome(index, value=action()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(Outcome(index, error="%s\n%s" % (exc, traceback.format_exc()),
                        error_type=type(exc).__name__))


def run_together(prepare: ty.Callable[..., ty.Callable[[], ty.Any]],
                 args: ty.Sequence[tuple[ty.Any, ...]],
                 timeout: float = 300,
                 while_running: ty.Callable[[], None] | None = None
                 ) -> list[Outcome]:
    """Run ``prepare(*args[i])()`` in ``len(args)`` processes at once.

    ``while_running`` is called repeatedly in the parent until every
    worker has reported (the storm's invariant checker).
    """
    barrier = CTX.Barrier(len(args))
    out = CTX.Queue()
    procs = [CTX.Process(target=_entry, args=(prepare, barrier, out, i, a))
             for i, a in enumerate(args)]
    for proc in procs:
        proc.start()
    results: dict[int, Outcome] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(procs):
            if while_running is not None:
                while_running()
            try:
                got = out.get(timeout=0.01 if while_running else 1)
                results[got.index] = got
            except queue_mod.Empty:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("%d of %d workers did not report in %ds"
                                   % (len(procs) - len(results), len(procs),
                                      timeout))
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    for index, proc in enumerate(procs):
        if index in results:
            results[index].exit_code = proc.exitcode
    return [results[i] for i in sorted(results)]
