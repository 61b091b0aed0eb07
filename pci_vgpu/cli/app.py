"""Entry point of ``pci-vgpu`` (grown into a cliff application by issue 8)."""

from __future__ import annotations

import sys

from pci_vgpu import conf


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    conf.CONF([a for a in argv if a != "demo"], project="pci-vgpu")
    print("[pci] alias:", conf.CONF.pci.alias)
    print("[pci] device_spec:", conf.CONF.pci.device_spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
