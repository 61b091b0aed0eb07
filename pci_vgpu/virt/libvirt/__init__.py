"""The libvirt virt driver: GPU/vGPU inventory, mdevs, NVIDIA VFs, guests.

This package is the only place in pci_vgpu that imports ``libvirt``.
"""
