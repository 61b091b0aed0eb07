"""The XAPI object database the simulator serves: tables, refs, getters.

XAPI keeps one record per object, addressed by an opaque reference
(``OpaqueRef:<uuid>``) and carrying its own ``uuid`` field.  Fields that
list other objects (``PGPU.resident_VGPUs``, ``GPU_group.PGPUs``,
``VM.VGPUs`` ...) are *derived* here from the forward links
(``VGPU.resident_on``, ``PGPU.GPU_group``, ``VGPU.VM``) every time a record
is read, so the two directions can never disagree.

Every value leaves the model in XAPI's wire shape: int64 numbers as
decimal strings (XML-RPC integers are 32-bit), refs as strings, maps as
string-keyed dicts.  The semantics of the calls the driver uses (VM start,
VGPU create, capacity) live in :mod:`.ops`.
"""

from __future__ import annotations

import random
import threading
import typing as ty
import uuid as uuidlib

NULL_REF = "OpaqueRef:NULL"

#: The classes the simulator implements, in XAPI's spelling.
CLASSES = ("session", "host", "PCI", "PGPU", "GPU_group", "VGPU_type", "VGPU", "VM")

Record = dict[str, ty.Any]


class XapiError(Exception):
    """A XAPI ``Failure``: an error code and its string parameters."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__([code, *self.params])

    @property
    def description(self) -> list[str]:
        """``ErrorDescription`` as XAPI sends it."""
        return [self.code, *self.params]


class Database:
    """Tables of records keyed by ref, with deterministic refs and UUIDs.

    Refs and UUIDs come from a seeded generator so that two simulators fed
    the same calls hand out the same refs: golden files of XenAPI payloads
    stay stable from run to run.
    """

    def __init__(self, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, dict[str, Record]] = {cls: {} for cls in CLASSES}
        self._rng: random.Random = random.Random(seed)

    def new_uuid(self) -> str:
        """A fresh, reproducible canonical UUID string."""
        return str(uuidlib.UUID(int=self._rng.getrandbits(128), version=4))

    def reseed_randomly(self) -> None:
        """Draw refs and UUIDs at random from now on.

        For a database read back from disk: simulators of several processes
        then never hand out the same ref for different objects.
        """
        self._rng = random.SystemRandom()

    def insert(self, cls: str, record: Record) -> str:
        """Store ``record`` under a new ref and return the ref."""
        ref = "OpaqueRef:" + self.new_uuid()
        record.setdefault("uuid", self.new_uuid())
        self.tables[cls][ref] = record
        return ref

    def get(self, cls: str, ref: object) -> Record:
        """The stored record of ``ref``.

        :raises: XapiError HANDLE_INVALID when ``ref`` names no ``cls``.
        """
        record = self.tables[cls].get(str(ref))
        if record is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return record

    def delete(self, cls: str, ref: str) -> None:
        """Forget ``ref`` (the caller has checked it exists)."""
        del self.tables[cls][ref]

    def refs(self, cls: str) -> list[str]:
        """Every ref of ``cls`` in creation order."""
        return list(self.tables[cls])

    def where(self, cls: str, field: str, value: object) -> list[str]:
        """Refs of ``cls`` whose stored ``field`` equals ``value``."""
        return [ref for ref, rec in self.tables[cls].items() if rec.get(field) == value]

    def by_uuid(self, cls: str, uuid: object) -> str:
        """The ref of the ``cls`` object with ``uuid``.

        :raises: XapiError UUID_INVALID.
        """
        for ref, rec in self.tables[cls].items():
            if rec["uuid"] == uuid:
                return ref
        raise XapiError("UUID_INVALID", cls, uuid)


def _derived(db: Database, cls: str, ref: str) -> Record:
    """The reverse links of ``ref``, computed from the forward ones."""
    if cls == "host":
        return {"PGPUs": db.refs("PGPU"), "PCIs": db.refs("PCI"),
                "resident_VMs": db.where("VM", "power_state", "Running")}
    if cls == "PGPU":
        return {"resident_VGPUs": db.where("VGPU", "resident_on", ref)}
    if cls == "GPU_group":
        return _group_links(db, ref)
    if cls == "VGPU_type":
        return _type_links(db, ref)
    if cls == "VM":
        return {"VGPUs": db.where("VGPU", "VM", ref)}
    return {}


def _group_links(db: Database, ref: str) -> Record:
    pgpus = db.where("PGPU", "GPU_group", ref)
    supported: list[str] = []
    enabled: list[str] = []
    for pgpu in pgpus:
        rec = db.get("PGPU", pgpu)
        supported += [t for t in rec["supported_VGPU_types"] if t not in supported]
        enabled += [t for t in rec["enabled_VGPU_types"] if t not in enabled]
    return {"PGPUs": pgpus, "VGPUs": db.where("VGPU", "GPU_group", ref),
            "supported_VGPU_types": supported, "enabled_VGPU_types": enabled}


def _type_links(db: Database, ref: str) -> Record:
    pgpus = db.refs("PGPU")
    supported = [p for p in pgpus if ref in db.get("PGPU", p)["supported_VGPU_types"]]
    enabled = [p for p in pgpus if ref in db.get("PGPU", p)["enabled_VGPU_types"]]
    groups = db.refs("GPU_group")
    return {
        "supported_on_PGPUs": supported,
        "enabled_on_PGPUs": enabled,
        "supported_on_GPU_groups": [g for g in groups
                                    if ref in _group_links(db, g)["supported_VGPU_types"]],
        "enabled_on_GPU_groups": [g for g in groups
                                  if ref in _group_links(db, g)["enabled_VGPU_types"]],
        "VGPUs": db.where("VGPU", "type", ref),
    }


def to_wire(value: object) -> object:
    """``value`` in XAPI's XML-RPC shape: ints as strings, recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def full_record(db: Database, cls: str, ref: str) -> Record:
    """The record of ``ref`` with derived links, in wire shape."""
    record = dict(db.get(cls, ref))
    record.update(_derived(db, cls, ref))
    return ty.cast(Record, to_wire(record))
