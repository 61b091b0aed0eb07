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
            name = entry.get("name") or ""
            lines.append("%s %s %s/%s" % (type_id, name, free, total))
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
