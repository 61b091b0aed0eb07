"""Flavors for the CLI: named in config, read from a file, or given inline.

A flavor here is what Nova's is to PCI: a name and extra specs, of which
``pci_passthrough:alias`` (``<alias>:<count>[,<alias>:<count>...]``) asks for
devices and ``hw:pci_numa_affinity_policy`` may override the aliases' NUMA
policy.  ``--flavor VALUE`` is resolved in this order:

1. the name of a ``[cli] flavor`` entry (JSON ``{"name", "extra_specs"}``);
2. a path to a JSON file holding such an object (or just the extra specs);
3. inline extra specs: ``KEY=VALUE`` words, e.g.
   ``pci_passthrough:alias=t4-1b:2``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing as ty

from oslo_config import cfg

from pci_vgpu import exception

GROUP = cfg.OptGroup("cli", title="pci-vgpu command line")

OPTS = [
    cfg.MultiStrOpt(
        "flavor", default=[],
        help='A named flavor for ``--flavor NAME``: JSON ``{"name": "t4-small", '
             '"extra_specs": {"pci_passthrough:alias": "t4-1b:1"}}``.'),
]


class InvalidFlavor(exception.Invalid):
    msg_fmt = ("Flavor %(flavor)r is not valid: %(reason)s.  Give a [cli] flavor name "
               "(known: %(known)s), a JSON file, or KEY=VALUE extra specs such as "
               "pci_passthrough:alias=<alias>:<count>.")


@dataclasses.dataclass(frozen=True)
class Flavor:
    name: str
    extra_specs: dict[str, str]


def register_opts(conf: cfg.ConfigOpts) -> None:
    if "cli" not in conf:
        conf.register_group(GROUP)
    if "flavor" not in conf.cli:
        conf.register_opts(OPTS, group=GROUP)


def configured(conf: cfg.ConfigOpts) -> dict[str, Flavor]:
    """The ``[cli] flavor`` entries by name.

    :raises: InvalidFlavor naming the entry that is not valid JSON.
    """
    register_opts(conf)
    result: dict[str, Flavor] = {}
    for raw in conf.cli.flavor:
        flavor = _from_obj(raw, _json(raw, raw))
        result[flavor.name] = flavor
    return result


def resolve(value: str, conf: cfg.ConfigOpts) -> Flavor:
    """Turn a ``--flavor`` value into a :class:`Flavor` (see module doc).

    :raises: InvalidFlavor naming the value and what is allowed.
    """
    known = configured(conf)
    if value in known:
        return known[value]
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            return _from_obj(value, _json(value, handle.read()))
    return Flavor(name="inline", extra_specs=_inline(value, known))


def _json(source: str, text: str) -> ty.Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidFlavor(flavor=source, reason="not valid JSON (%s)" % exc,
                            known="-") from exc


def _from_obj(source: str, obj: ty.Any) -> Flavor:
    if not isinstance(obj, dict):
        raise InvalidFlavor(flavor=source, reason="expected a JSON object", known="-")
    specs = obj.get("extra_specs", obj if "name" not in obj else None)
    if not isinstance(specs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in specs.items()):
        raise InvalidFlavor(flavor=source, known="-",
                            reason="extra_specs must be an object of strings")
    return Flavor(name=str(obj.get("name") or os.path.basename(source)), extra_specs=specs)


def _inline(value: str, known: dict[str, Flavor]) -> dict[str, str]:
    specs: dict[str, str] = {}
    for word in value.split():
        key, sep, spec = word.partition("=")
        if not sep or not key or not spec:
            raise InvalidFlavor(flavor=value, known=", ".join(sorted(known)) or "none",
                                reason="%r is not KEY=VALUE" % word)
        specs[key] = spec
    if not specs:
        raise InvalidFlavor(flavor=value, known=", ".join(sorted(known)) or "none",
                            reason="it is empty")
    return specs
