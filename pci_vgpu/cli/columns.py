"""Column types: readable in a table, structured in JSON/YAML.

cliff asks a :class:`FormattableColumn` for ``human_readable()`` (table,
value, csv) or ``machine_readable()`` (json, yaml), so a device's vGPU types
are one line per type in a table and an object in JSON.
"""

from __future__ import annotations

import typing as ty

from cliff import columns


class VgpuTypesColumn(columns.FormattableColumn[dict[str, ty.Any]]):
    """``{type_id: {"available", "max", "name", "device_api"}}``."""

    def human_readable(self) -> str:
        lines = []
        for type_id, entry in sorted((self._value or {}).items()):
            free = entry.get("available", 0)
            total = entry.get("max", free)
            name = entry.get("name")
            label = type_id if name in (None, "", type_id) else "%s %s" % (type_id, name)
            lines.append("%s %s/%s" % (label, free, total))
        return "\n".join(lines)

    def machine_readable(self) -> dict[str, ty.Any]:
        return {type_id: {"available": int(entry.get("available", 0)),
                          "max": int(entry.get("max", entry.get("available", 0))),
                          "name": entry.get("name"),
                          "device_api": entry.get("device_api")}
                for type_id, entry in sorted((self._value or {}).items())}


class ListColumn(columns.FormattableColumn[ty.Sequence[ty.Any]]):
    """A list: comma-separated in a table, an array in JSON."""

    def human_readable(self) -> str:
        return ", ".join(str(v) for v in self._value or ())

    def machine_readable(self) -> list[ty.Any]:
        return list(self._value or ())


class DictColumn(columns.FormattableColumn[dict[str, ty.Any]]):
    """A mapping: ``k=v`` per line in a table, an object in JSON."""

    def human_readable(self) -> str:
        return "\n".join("%s=%s" % (k, v) for k, v in sorted((self._value or {}).items()))

    def machine_readable(self) -> dict[str, ty.Any]:
        return dict(self._value or {})


class DevicesColumn(columns.FormattableColumn[ty.Sequence[ty.Any]]):
    """A server's devices: one summary line each in a table, objects in JSON."""

    def human_readable(self) -> str:
        return "\n".join(device_summary(d) for d in self._value or ())

    def machine_readable(self) -> list[dict[str, ty.Any]]:
        return [device_object(d) for d in self._value or ()]


def _get(dev: ty.Any, name: str) -> ty.Any:
    fields = getattr(dev, "fields", None)
    if fields is not None and name in fields and not dev.obj_attr_is_set(name):
        return None
    return getattr(dev, name, None)


def device_object(dev: ty.Any) -> dict[str, ty.Any]:
    """The JSON shape of a device held by a server (documented in README)."""
    return {"mdev_uuid": _get(dev, "mdev_uuid"), "address": _get(dev, "address"),
            "parent_addr": _get(dev, "parent_addr"), "dev_type": _get(dev, "dev_type"),
            "vgpu_type": _get(dev, "vgpu_type"), "numa_node": _get(dev, "numa_node"),
            "status": _get(dev, "status")}


def device_summary(dev: ty.Any) -> str:
    """``<mdev uuid or address> (<type>, on <parent>, NUMA <n>)`` for tables."""
    obj = device_object(dev)
    kind = obj["vgpu_type"] or obj["dev_type"]
    where = "on %s, " % obj["parent_addr"] if obj["parent_addr"] else ""
    return "%s (%s, %sNUMA %s)" % (obj["mdev_uuid"] or obj["address"], kind, where,
                                   obj["numa_node"])
