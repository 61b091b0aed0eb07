"""The ``pci-vgpu`` operator command line (cliff)."""
