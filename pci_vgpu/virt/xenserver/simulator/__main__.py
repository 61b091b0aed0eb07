"""``python -m pci_vgpu.virt.xenserver.simulator``: serve a simulated host.

Prints the URL on the first line of standard output (so a parent process
can read it when ``--port 0`` picks a free port), then serves until
interrupted.
"""

from __future__ import annotations

import argparse
import sys
import threading

from pci_vgpu import exception
from pci_vgpu.virt.xenserver.simulator import hostdesc
from pci_vgpu.virt.xenserver.simulator.server import Simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pci_vgpu.virt.xenserver.simulator",
        description="Serve a simulated XAPI host on 127.0.0.1.")
    parser.add_argument("--host", default="grid-k2",
                        help="shipped host (%s) or a description file"
                        % ", ".join(hostdesc.shipped_hosts()))
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--username", default="root")
    parser.add_argument("--password", default="")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        sim = Simulator(args.host, args.username, args.password, args.port)
    except exception.PciVgpuException as exc:
        print(exc.format_message(), file=sys.stderr)
        return 2
    with sim:
        print(sim.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
