"""vGPU support built on OpenStack Nova's PCI passthrough framework.

Importing this package has no side effects: objects are registered by
``pci_vgpu.objects.register_all()`` (also done on ``import pci_vgpu.objects``)
and options by ``pci_vgpu.conf``.
"""
