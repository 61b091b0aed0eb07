"""``config check``: the configuration against the live inventory.

Each problem is one row naming the config key and the offending value:

* ``[pci] alias`` / ``[pci] device_spec`` / ``[cli] flavor`` that do not parse;
* a device_spec entry that matches no device of the host;
* an alias that matches no assignable device (a warning: aliases are
  shared by a cloud's hosts), or asks for vGPU types that the GPUs it
  matches do not offer;
* a flavor whose ``hw:pci_numa_affinity_policy`` overrides its aliases'
  ``numa_policy`` (allowed, as in Nova, but worth knowing);
* a driver that cannot be loaded or reached;
* sections and options pci-vgpu does not know in the files read, and
  ``[pci] device_spec`` keys it does not know (``[databse]`` would silently
  leave ``[database]`` at its default: a second database).

Errors make the exit code 1; warnings do not.
"""

from __future__ import annotations

import argparse
import json
import typing as ty

from pci_vgpu import conf as pci_conf
from pci_vgpu import devspec
from pci_vgpu import exception
from pci_vgpu import request
from pci_vgpu.cli import base
from pci_vgpu.cli import config
from pci_vgpu.cli import flavors
from pci_vgpu.cli import wiring

CHECK_COLUMNS = ("level", "key", "value", "problem")
ERROR, WARNING, OK = "error", "warning", "ok"
Row = tuple[str, str, str, str]


def _msg(exc: Exception) -> str:
    return exc.format_message() if isinstance(exc, exception.PciVgpuException) else str(exc)


def check_device_specs(conf: ty.Any, devices: list[dict[str, ty.Any]] | None
                       ) -> tuple[list[Row], devspec.Whitelist | None]:
    """Parse ``[pci] device_spec`` and find entries that match nothing."""
    try:
        whitelist = devspec.Whitelist(conf.pci.device_spec)
    except exception.PciVgpuException as exc:
        return [(ERROR, "[pci] device_spec", "", _msg(exc))], None
    rows: list[Row] = []
    for spec in whitelist.specs if devices is not None else ():
        if not any(spec.match(d) for d in devices or ()):
            rows.append((ERROR, "[pci] device_spec",
                         json.dumps(spec.dev_spec_conf, sort_keys=True),
                         "matches no device of the host"))
    return rows, whitelist


def _offered_types(gpu: dict[str, ty.Any]) -> set[str]:
    names: set[str] = set()
    for type_id, entry in (gpu.get("vgpu_types") or {}).items():
        names.update(n for n in (type_id, entry.get("name"), entry.get("identifier")) if n)
    return names


def _spec_matches(spec: dict[str, ty.Any], dev: dict[str, ty.Any]) -> bool:
    return all(str(dev.get(k, "")).lower() == str(spec[k]).lower()
               for k in ("vendor_id", "product_id") if k in spec)


def check_alias(name: str, specs: list[dict[str, ty.Any]],
                assignable: list[dict[str, ty.Any]]) -> list[Row]:
    """One alias against the devices ``[pci] device_spec`` lets through."""
    for spec in specs:
        matching = [d for d in assignable if _spec_matches(spec, d)]
        wanted = request.vgpu_types_of(spec)
        if not matching:
            continue
        if not wanted:
            return []
        offered = set().union(*(_offered_types(d) for d in matching))
        if wanted & offered:
            return []
        return [(ERROR, "[pci] alias", name,
                 "asks for vGPU types %s that no matching GPU offers (offered: %s)"
                 % (", ".join(sorted(wanted)), ", ".join(sorted(offered)) or "none"))]
    # A warning: aliases are usually shared by every host of a cloud, and a
    # host without that kind of GPU is normal.
    return [(WARNING, "[pci] alias", name, "matches no assignable device of the host")]


def check_aliases(conf: ty.Any, assignable: list[dict[str, ty.Any]] | None
                  ) -> tuple[list[Row], dict[str, ty.Any]]:
    try:
        aliases = request.get_alias_from_config(conf)
    except exception.PciVgpuException as exc:
        return [(ERROR, "[pci] alias", "", _msg(exc))], {}
    rows: list[Row] = []
    for name, (_policy, specs) in sorted(aliases.items()):
        if assignable is not None:
            rows += check_alias(name, specs, assignable)
    return rows, aliases


def check_flavors(conf: ty.Any, aliases: dict[str, ty.Any]) -> list[Row]:
    try:
        known = flavors.configured(conf)
    except exception.PciVgpuException as exc:
        return [(ERROR, "[cli] flavor", "", _msg(exc))]
    rows: list[Row] = []
    for name, flavor in sorted(known.items()):
        try:
            requests = wiring.requests_for(flavor, conf).requests
        except exception.PciVgpuException as exc:
            rows.append((ERROR, "[cli] flavor", name, _msg(exc)))
            continue
        override = flavor.extra_specs.get("hw:pci_numa_affinity_policy")
        for req in requests:
            alias_policy = aliases.get(req.alias_name, (None,))[0]
            if override and alias_policy and override != alias_policy:
                rows.append((WARNING, "[cli] flavor", name,
                             "hw:pci_numa_affinity_policy=%s overrides numa_policy=%s of "
                             "alias %s" % (override, alias_policy, req.alias_name)))
    return rows


class ConfigCheck(base.Lister):
    """Validate aliases, device specs, flavors and the driver against the host."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        self.add_connection_option(parser)
        return parser

    def _inventory(self, parsed_args: argparse.Namespace) -> tuple[list[Row], ty.Any]:
        try:
            return [], self.driver(parsed_args).get_pci_passthrough_devices()
        except exception.PciVgpuException as exc:
            return [(ERROR, "[host] driver", str(pci_conf.CONF.host.driver), _msg(exc))], None

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        conf = pci_conf.CONF
        rows, devices = self._inventory(parsed_args)
        spec_rows, whitelist = check_device_specs(conf, devices)
        assignable = None
        if devices is not None and whitelist is not None:
            assignable = [d for d in devices if whitelist.device_assignable(d)]
        alias_rows, aliases = check_aliases(conf, assignable)
        rows += [(ERROR, key, value, problem) for key, value, problem in config.problems(conf)]
        rows += spec_rows + alias_rows
        if not any(r[0] == ERROR and r[2] == "" for r in alias_rows):
            # With unparsable aliases every flavor would repeat that error.
            rows += check_flavors(conf, aliases)
        self.errors = sum(1 for r in rows if r[0] == ERROR)
        if not rows:
            rows = [(OK, "-", "-", "no problem found")]
        return CHECK_COLUMNS, rows

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.errors = 0
        result = int(super().run(parsed_args))
        return result if result or not self.errors else 1
