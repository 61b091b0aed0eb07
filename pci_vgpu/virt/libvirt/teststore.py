"""The disk of an embedded libvirt test host: its state between processes.

The libvirt *test* driver keeps everything in the memory of one connection,
so a guest booted by one ``pci-vgpu`` command would be gone at the next.  A
real host keeps that state on disk, and so does this store, in the formats
of the real boundary, never as pci_vgpu objects:

``source.xml``
    The host file as first opened: the hardware.  The seam's kernel rules
    (how many instances of a type fit) start from its ``availableInstances``
    and mdevs, as the kernel starts from the GPU.
``host.xml``
    The host now, as a libvirt test-driver host file: the source's devices
    with the current ``availableInstances``, one ``<device>`` per active mdev
    (what ``/sys/bus/mdev/devices`` holds) and one ``<domain>`` per defined
    guest with its ``<test:runstate>`` (what ``/etc/libvirt/qemu`` and the
    running domains are).  ``virsh -c test:///<dir>/host.xml`` reads it.
``mdevctl.d/<parent address>/<uuid>``
    One mdevctl config per defined (persistent) mdev, mdevctl's own JSON
    (``{"mdev_type": ..., "start": "auto"|"manual", "attrs": []}``).
``lock``
    Taken by every call that reads or changes the host, so two processes
    see one host, each call atomic as the kernel and libvirtd make theirs.

Files are replaced by rename, ``host.xml`` last: a process killed while
saving leaves either the old or the new version of each file, and every
mix of them is a state a real host can be in (an mdev defined but not
started, a started mdev not yet defined).

A store lives in ``[host] state_dir``, one directory per host file
(``libvirt-test/<name>-<hash>``, see :mod:`pci_vgpu.virt.embedded`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import typing as ty

from lxml import etree

from pci_vgpu import fault
from pci_vgpu.virt import embedded

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
#: ``virDomainState`` values the test driver reads from ``<test:runstate>``.
RUNNING, SHUTOFF = 1, 5


StateDirUnusable = embedded.StateDirUnusable


@dataclasses.dataclass(frozen=True)
class MdevConfig:
    """One mdevctl config: a defined mdev."""

    parent_addr: str
    mdev_type: str
    autostart: bool


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the seam writes: the host file text and the mdevctl configs."""

    host_xml: str
    configs: dict[str, MdevConfig]


def store_dir(state_dir: str, source_path: str) -> str:
    """The store of host file ``source_path`` under ``state_dir``.

    :raises: StateDirUnusable if the source cannot be read.
    """
    return embedded.state_subdir(state_dir, "libvirt-test", source_path)


class HostStore:
    """One embedded host's directory (see the module docstring)."""

    def __init__(self, directory: str, source_path: str) -> None:
        self.directory = directory
        self.source_path = source_path
        self.host_path = os.path.join(directory, "host.xml")
        self._source_copy = os.path.join(directory, "source.xml")
        self._configs_dir = os.path.join(directory, "mdevctl.d")
        self._lock = embedded.HostLock(directory)
        self._source_text: str | None = None

    @property
    def uri(self) -> str:
        """The libvirt URI of the current host file."""
        return "test://" + self.host_path

    def lock(self) -> ty.ContextManager[None]:
        """Hold the host: no other process reads or changes it meanwhile.

        :raises: StateDirUnusable when the directory cannot be created.
        """
        return self._lock.held()

    def ensure(self) -> bool:
        """Start the host from its source file on first use (hold the lock).

        :returns: True when the host was just started.
        """
        if os.path.exists(self.host_path):
            return False

        def copy() -> None:
            with open(self.source_path, encoding="utf-8") as handle:
                text = handle.read()
            embedded.replace_file(self._source_copy, text)
            embedded.replace_file(self.host_path, text)
        embedded.guard(self.directory, "copying %s" % self.source_path, copy)
        return True

    def discard(self) -> None:
        """Forget a host just started (its source turned out unusable)."""
        for path in (self.host_path, self._source_copy):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever another process saved the host."""
        result: list[int] = []
        for path in (self.host_path, self._configs_dir):
            try:
                st = os.stat(path)
                result += [st.st_ino, st.st_mtime_ns, st.st_size]
            except FileNotFoundError:
                result += [0, 0, 0]
        return tuple(result)

    def source_xml(self) -> str:
        """The host file as first opened (the hardware); it never changes."""
        if self._source_text is None:
            with open(self._source_copy, encoding="utf-8") as handle:
                self._source_text = handle.read()
        return self._source_text

    def read_configs(self) -> dict[str, MdevConfig]:
        """mdev UUID -> its mdevctl config; unreadable files are skipped."""
        configs: dict[str, MdevConfig] = {}
        if not os.path.isdir(self._configs_dir):
            return configs
        for parent in sorted(os.listdir(self._configs_dir)):
            for name in sorted(os.listdir(os.path.join(self._configs_dir, parent))):
                if embedded.is_temporary(name):
                    continue  # removed by the next save
                config = _read_config(os.path.join(self._configs_dir, parent, name), parent)
                if config is not None:
                    configs[name.lower()] = config
        return configs

    def save(self, snapshot: Snapshot) -> None:
        """Write the configs, then ``host.xml`` (the commit point)."""
        embedded.guard(self.directory, "saving the host", lambda: self._save(snapshot))

    def _save(self, snapshot: Snapshot) -> None:
        os.makedirs(self._configs_dir, mode=0o700, exist_ok=True)
        wanted = {os.path.join(self._configs_dir, c.parent_addr, uuid_): c
                  for uuid_, c in snapshot.configs.items()}
        for path, config in wanted.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            embedded.replace_file(path, json.dumps({"mdev_type": config.mdev_type, "start": (
                "auto" if config.autostart else "manual"), "attrs": []}, indent=2) + "\n")
        for parent in os.listdir(self._configs_dir):
            folder = os.path.join(self._configs_dir, parent)
            for name in os.listdir(folder):
                if os.path.join(folder, name) not in wanted:
                    os.unlink(os.path.join(folder, name))
            if not os.listdir(folder):
                os.rmdir(folder)
        fault.point("host:saving")
        embedded.replace_file(self.host_path, snapshot.host_xml)


def _read_config(path: str, parent: str) -> MdevConfig | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return MdevConfig(parent_addr=parent, mdev_type=str(data["mdev_type"]),
                          autostart=data.get("start") == "auto")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compose(source_xml: str, available: ty.Mapping[str, ty.Mapping[str, int]],
            mdev_xmls: ty.Sequence[str], domains: ty.Sequence[tuple[str, bool]]) -> str:
    """The current host file: ``source_xml`` with today's mdevs and domains.

    :param available: parent node-device name -> type id -> available now.
    :param mdev_xmls: node-device XML of every active mdev.
    :param domains: (inactive domain XML, running) of every defined guest.
    """
    root = etree.fromstring(source_xml.encode("utf-8"))
    for elem in list(root):
        if elem.tag == "domain" or (elem.tag == "device" and elem.find(
                "capability[@type='mdev']") is not None):
            root.remove(elem)
    for device in root.iterfind("device"):
        counts = available.get(device.findtext("name") or "", {})
        for type_elem in device.iterfind(".//capability[@type='mdev_types']/type"):
            count = type_elem.find("availableInstances")
            if count is not None and type_elem.get("id") in counts:
                count.text = str(counts[type_elem.get("id", "")])
    for xml in mdev_xmls:
        root.append(etree.fromstring(xml.encode("utf-8")))
    for xml, running in domains:
        domain = etree.fromstring(xml.encode("utf-8"))
        runstate = etree.SubElement(domain, "{%s}runstate" % TEST_NS, nsmap={"test": TEST_NS})
        runstate.text = str(RUNNING if running else SHUTOFF)
        root.append(domain)
    return str(etree.tostring(root, pretty_print=True, encoding="unicode"))
