"""The fault suite's launcher: one pre-imported pci-vgpu that forks each command.

Starting the console script costs ~1.4 s of imports on the CI machine; a
fork of a process that already imported everything costs a few
milliseconds, so the suite can kill hundreds of commands in its budget.  A
forked child runs the real CLI entry point, :func:`pci_vgpu.cli.app.main`,
with its own environment, stdout/stderr file and exit code: to the host,
the database and the fault hook it is the same process the console script
would be.  The zygote itself never opens a database or a hypervisor (a
forked connection would be shared), it only imports.

Protocol: one JSON object per line on stdin, one answer per line on stdout.

``{"run": [argv...], "env": {...}, "out": "<file>"}`` -> ``{"pid": N}``
``{"wait": N}`` -> ``{"status": <exit code, or -signal number>}``
"""

from __future__ import annotations

import json
import os
import sys
import typing as ty


def _preload() -> ty.Any:
    import importlib

    from pci_vgpu.cli import app
    for name, target in app.COMMANDS:
        importlib.import_module(target.partition(":")[0])
    for module in ("pci_vgpu.virt.libvirt.driver", "pci_vgpu.virt.xenserver.driver",
                   "pci_vgpu.virt.xenserver.simulator", "pci_vgpu.db.api",
                   "pci_vgpu.manager", "pci_vgpu.stats", "pci_vgpu.reconcile",
                   "pci_vgpu.reconcile_inventory", "pymysql", "psycopg2"):
        importlib.import_module(module)
    app.quiet_import_warnings()
    return app


def _child(app: ty.Any, request: dict[str, ty.Any], fd: int) -> None:
    """Become the command, writing to ``fd``; never returns."""
    rc = 70
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(request.get("env") or {})
        rc = int(app.main(list(request["run"])))
        from pci_vgpu.cli import connection
        from pci_vgpu.cli import wiring
        connection.close_all()
        wiring.close_all()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def main() -> int:
    app = _preload()
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            # The output file exists before the child does: a kill that
            # lands before the command starts still leaves one to read.
            fd = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            pid = os.fork()
            if pid == 0:
                _child(app, request, fd)
            os.close(fd)
            answer: dict[str, int] = {"pid": pid}
        else:
            answer = {"status": _status(os.waitpid(int(request["wait"]), 0)[1])}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
