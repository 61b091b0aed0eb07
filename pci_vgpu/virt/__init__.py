"""Virt drivers: the hypervisor side of pci_vgpu (see ``driver.py``)."""
