"""PCI aliases (``[pci] alias``) and flavor requests, Nova's rules plus vGPUs.

An alias names what a flavor may ask for: Nova's keys (``name``,
``vendor_id``, ``product_id``, ``device_type``, ``numa_policy``, ...) plus the
vGPU tag ``vgpu_types`` -- one type name or a list, any of which satisfies the
request -- which may also be written inside a generic ``capabilities`` dict
(``"capabilities": {"vgpu_types": [...]}``).  Both spellings yield the same
request spec: ``spec["vgpu_types"]`` is the JSON list of the type names,
sorted, because Nova's request specs hold only strings.

A flavor's ``pci_passthrough:alias`` (``"gpu-small:1,vf:2"``) becomes one
:class:`~pci_vgpu.objects.InstancePCIRequest` per entry, each with its own
``request_id``; ``hw:pci_numa_affinity_policy`` overrides the alias policy.

Every bad input raises a subclass of :class:`pci_vgpu.exception.Invalid`
whose message names the alias, key and value and says what is allowed.
"""

from __future__ import annotations

import copy
import functools
import json
import typing as ty

import jsonschema
from oslo_config import cfg
from oslo_utils import strutils
from oslo_utils import uuidutils

from pci_vgpu import conf as pci_conf
from pci_vgpu import exception
from pci_vgpu.objects import fields as obj_fields
from pci_vgpu.objects import instance_pci_requests as ipr
from pci_vgpu import vgpu_types
# Re-exported: callers and tests use them from here; the rules live in
# pci_vgpu.vgpu_types so that the Nova series can share them.
from pci_vgpu.vgpu_types import encode_vgpu_types as encode_vgpu_types
from pci_vgpu.vgpu_types import validate_vgpu_type_name as validate_vgpu_type_name
from pci_vgpu.vgpu_types import VGPU_TYPES_TAG as VGPU_TYPES_TAG
from pci_vgpu.vgpu_types import vgpu_types_of as vgpu_types_of

#: name -> (numa_policy, [spec, ...]); Nova's ``Alias`` shape.
Alias = dict[str, tuple[str, list[dict[str, str]]]]

FLAVOR_ALIAS_KEY = "pci_passthrough:alias"
FLAVOR_POLICY_KEY = "hw:pci_numa_affinity_policy"

_POLICIES = obj_fields.PCINUMAAffinityPolicy.ALL
_DEVICE_TYPES = ("type-PCI", "type-PF", "type-VF")

_TYPES_SCHEMA: dict[str, ty.Any] = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
    ],
}

_ALIAS_SCHEMA: dict[str, ty.Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "capability_type": {"type": "string", "enum": ["pci"]},
        "product_id": {"type": "string", "pattern": "^[0-9a-fA-F]{4}$"},
        "vendor_id": {"type": "string", "pattern": "^[0-9a-fA-F]{4}$"},
        "device_type": {"type": "string", "enum": list(_DEVICE_TYPES)},
        "numa_policy": {"type": "string", "enum": list(_POLICIES)},
        "resource_class": {"type": "string"},
        "traits": {"type": "string"},
        "live_migratable": {"type": "string"},
        VGPU_TYPES_TAG: _TYPES_SCHEMA,
        "capabilities": {
            "type": "object",
            "additionalProperties": False,
            "properties": {VGPU_TYPES_TAG: _TYPES_SCHEMA},
        },
    },
    "required": ["name"],
}

#: What each key accepts, in words, for error messages.
_ALLOWED: dict[str, str] = {
    "name": "a non-empty string of at most 256 characters",
    "capability_type": "'pci'",
    "product_id": "4 hexadecimal digits, e.g. '1eb8'",
    "vendor_id": "4 hexadecimal digits, e.g. '10de'",
    "device_type": "one of %s" % ", ".join(_DEVICE_TYPES),
    "numa_policy": "one of %s" % ", ".join(_POLICIES),
    "resource_class": "a string",
    "traits": "a string",
    "live_migratable": "a boolean string such as 'true' or 'false'",
    VGPU_TYPES_TAG: "a vGPU type name or a non-empty list of them",
    "capabilities": "an object whose only key is 'vgpu_types'",
}


# -- aliases -------------------------------------------------------------------


def get_alias_from_config(conf: cfg.ConfigOpts | None = None) -> Alias:
    """Parse and validate every ``[pci] alias`` of ``conf``.

    :returns: ``{name: (numa_policy, [spec, ...])}``; a fresh copy each call.
    :raises: a PciInvalidAlias subclass naming the alias, key and value.
    """
    conf = pci_conf.CONF if conf is None else conf
    return copy.deepcopy(_parse_aliases(tuple(conf.pci.alias)))


@functools.lru_cache(maxsize=32)
def _parse_aliases(raw_aliases: tuple[str, ...]) -> Alias:
    # Cached by the option values themselves, so a changed config is never
    # served stale (Nova's cache needs a manual cache_clear()).
    aliases: Alias = {}
    for raw in raw_aliases:
        name, policy, spec = _parse_one_alias(raw)
        _merge_alias(aliases, name, policy, spec)
    return aliases


def _parse_one_alias(raw: str) -> tuple[str, str, dict[str, str]]:
    alias = _load_json_object(raw)
    label = _label(alias)
    _check_keys(label, alias)
    _check_schema(label, alias)
    raw_name = alias.pop("name")
    name = raw_name.strip()
    if not name:
        raise exception.PciAliasInvalidKey(
            alias=label, key="name", value=raw_name,
            reason="must be %s" % _ALLOWED["name"])
    policy = alias.pop("numa_policy", None) or \
        obj_fields.PCINUMAAffinityPolicy.LEGACY
    return name, policy, _build_spec(name, alias)


def _load_json_object(raw: str) -> dict[str, ty.Any]:
    try:
        alias = json.loads(raw)
    except ValueError as exc:
        raise exception.PciAliasMalformedJson(value=raw, reason=str(exc))
    if not isinstance(alias, dict):
        raise exception.PciAliasMalformedJson(
            value=raw, reason="got %s" % type(alias).__name__)
    return alias


def _label(alias: dict[str, ty.Any]) -> str:
    name = alias.get("name")
    return repr(name) if isinstance(name, str) and name.strip() else \
        "%s (no valid name)" % json.dumps(alias, sort_keys=True)


def _check_keys(label: str, alias: dict[str, ty.Any]) -> None:
    allowed = _ALIAS_SCHEMA["properties"]
    for key in sorted(alias):
        if key not in allowed:
            raise exception.PciAliasInvalidKey(
                alias=label, key=key, value=alias[key],
                reason="unknown key; allowed keys: %s" % ", ".join(allowed))
    if "name" not in alias:
        raise exception.PciAliasInvalidKey(
            alias=label, key="name", value=None,
            reason="is required: %s" % _ALLOWED["name"])


def _check_schema(label: str, alias: dict[str, ty.Any]) -> None:
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_ALIAS_SCHEMA).iter_errors(alias))
    if error is None:
        return
    key = str(error.absolute_path[0]) if error.absolute_path else "?"
    value = alias.get(key)
    reason = "must be %s" % _ALLOWED.get(key, "valid")
    if key == "capabilities" and isinstance(value, dict):
        unknown = sorted(set(value) - {VGPU_TYPES_TAG})
        if unknown:
            reason = "unknown capability %r; %s" % (unknown[0], reason)
    raise exception.PciAliasInvalidKey(
        alias=label, key=key, value=value, reason=reason)


def _build_spec(name: str, alias: dict[str, ty.Any]) -> dict[str, str]:
    spec: dict[str, str] = {}
    types = _alias_vgpu_types(name, alias)
    for key, value in alias.items():
        if key in ("vendor_id", "product_id"):
            spec[key] = value.lower()
        elif key == "device_type":
            spec["dev_type"] = value
        elif key == "live_migratable":
            spec[key] = _bool_string(name, key, value)
        else:
            spec[key] = value
    if types:
        spec[VGPU_TYPES_TAG] = encode_vgpu_types(types)
    has_ids = "vendor_id" in spec and "product_id" in spec
    if not (has_ids or types or "resource_class" in spec):
        raise exception.PciAliasMissingIds(alias=name)
    return spec


def _alias_vgpu_types(name: str, alias: dict[str, ty.Any]) -> frozenset[str]:
    """Pop both spellings of vgpu_types; they must agree when both given."""
    top = alias.pop(VGPU_TYPES_TAG, None)
    capabilities = alias.pop("capabilities", None) or {}
    try:
        return vgpu_types.merge_alias_vgpu_types(
            top, capabilities.get(VGPU_TYPES_TAG))
    except vgpu_types.VgpuTypesInvalid as exc:
        raise exception.PciAliasInvalidKey(
            alias=repr(name), key=exc.key, value=exc.value,
            reason=exc.reason) from exc


def _bool_string(alias: str, key: str, value: str) -> str:
    try:
        return "true" if strutils.bool_from_string(value, strict=True) \
            else "false"
    except ValueError:
        raise exception.PciAliasInvalidKey(
            alias=repr(alias), key=key, value=value,
            reason="must be %s" % _ALLOWED[key])


class PciAliasDuplicate(exception.PciInvalidAlias):
    msg_fmt = ("PCI alias %(alias)s is defined twice for the same devices (%(devices)s) "
               "with different %(key)s: %(first)r and %(second)r; merge them into one "
               "definition (vgpu_types takes a list)")


#: What decides which devices an alias spec matches.
_MATCH_KEYS = ("vendor_id", "product_id", "dev_type")


def _merge_alias(aliases: Alias, name: str, policy: str,
                 spec: dict[str, str]) -> None:
    """Same name twice ORs the specs; their policy and type must agree.

    Two definitions for the same devices (same vendor, product and device
    type) that differ otherwise would leave it to chance which one serves
    a request: refused.  An exact repeat is kept once.

    :raises: PciAliasConflict, PciAliasDuplicate.
    """
    if name not in aliases:
        aliases[name] = (policy, [spec])
        return
    first_policy, specs = aliases[name]
    if first_policy != policy:
        raise exception.PciAliasConflict(
            alias=name, key="numa_policy", first=first_policy, second=policy)
    first_type, new_type = specs[0].get("dev_type"), spec.get("dev_type")
    if first_type != new_type:
        raise exception.PciAliasConflict(
            alias=name, key="device_type", first=first_type, second=new_type)
    for known in specs:
        if any(known.get(k) != spec.get(k) for k in _MATCH_KEYS):
            continue
        if known == spec:
            return
        key = sorted(k for k in set(known) | set(spec) if known.get(k) != spec.get(k))[0]
        raise PciAliasDuplicate(alias=name, key=key, first=known.get(key),
                                second=spec.get(key), devices="%s:%s" % (
                                    spec.get("vendor_id", "*"), spec.get("product_id", "*")))
    specs.append(spec)


# -- flavors -------------------------------------------------------------------


def get_pci_requests_from_flavor(
        flavor: ty.Any, conf: cfg.ConfigOpts | None = None,
        affinity_policy: str | None = None) -> ipr.InstancePCIRequests:
    """Turn a flavor's ``pci_passthrough:alias`` into PCI requests.

    ``flavor`` is anything with ``extra_specs`` (key or attribute).  The NUMA
    policy of each request is, first found: ``affinity_policy``, the
    flavor's ``hw:pci_numa_affinity_policy``, the alias's ``numa_policy``.

    :raises: PciFlavorAliasEntryInvalid, PciRequestAliasNotDefined,
        PciInvalidNumaPolicy, or a PciInvalidAlias subclass.
    """
    extra_specs = _extra_specs(flavor)
    value = extra_specs.get(FLAVOR_ALIAS_KEY)
    if value is None:
        return ipr.InstancePCIRequests(requests=[])
    policy = affinity_policy or extra_specs.get(FLAVOR_POLICY_KEY)
    if policy is not None:
        _check_policy(policy, "affinity_policy" if affinity_policy
                      else "flavor extra spec %s" % FLAVOR_POLICY_KEY)
    entries = parse_flavor_alias_spec(value)
    aliases = get_alias_from_config(conf)
    return ipr.InstancePCIRequests(requests=[
        _request_for(name, count, aliases, policy) for name, count in entries])


def _extra_specs(flavor: ty.Any) -> ty.Mapping[str, ty.Any]:
    if isinstance(flavor, ty.Mapping):
        return ty.cast(ty.Mapping[str, ty.Any], flavor.get("extra_specs") or {})
    return ty.cast(ty.Mapping[str, ty.Any],
                   getattr(flavor, "extra_specs", None) or {})


def _check_policy(policy: ty.Any, source: str) -> None:
    if policy not in _POLICIES:
        raise exception.PciInvalidNumaPolicy(
            policy=policy, source=source, allowed=", ".join(_POLICIES))


def parse_flavor_alias_spec(value: ty.Any) -> list[tuple[str, int]]:
    """Split ``"a:1,b:2"`` into ``[("a", 1), ("b", 2)]``.

    :raises: PciFlavorAliasEntryInvalid naming the entry and the rule.
    """
    if not isinstance(value, str):
        raise exception.PciFlavorAliasEntryInvalid(
            entry=value, value=value, reason="the value must be a string")
    return [_parse_entry(entry, value) for entry in value.split(",")]


def _parse_entry(entry: str, value: str) -> tuple[str, int]:
    def invalid(reason: str) -> exception.PciFlavorAliasEntryInvalid:
        return exception.PciFlavorAliasEntryInvalid(
            entry=entry, value=value, reason=reason)

    if not entry.strip():
        raise invalid("empty entry; entries are <alias name>:<count> "
                      "separated by ','")
    if entry.count(":") != 1:
        raise invalid("expected <alias name>:<count>, e.g. 'gpu-small:1'")
    name, count = (part.strip() for part in entry.split(":"))
    if not name:
        raise invalid("the alias name is empty")
    if not count.isascii() or not count.isdigit() or int(count) < 1:
        raise invalid("count %r is not a positive integer" % count)
    return name, int(count)


def _request_for(name: str, count: int, aliases: Alias,
                 policy: str | None) -> ipr.InstancePCIRequest:
    if name not in aliases:
        raise exception.PciRequestAliasNotDefined(
            alias=name, defined=", ".join(sorted(aliases)) or "none")
    alias_policy, specs = aliases[name]
    return ipr.InstancePCIRequest(
        count=count, spec=copy.deepcopy(specs), alias_name=name,
        numa_policy=policy or alias_policy, is_new=False,
        request_id=uuidutils.generate_uuid(), requester_id=None)


def describe_request(req: ipr.InstancePCIRequest) -> dict[str, ty.Any]:
    """A plain, JSON-ready view of a request, vGPU types decoded.

    For people and CLIs (``pci-vgpu demo`` prints these); the object itself
    stays the interface between components.
    """
    return {
        "alias_name": req.alias_name,
        "count": req.count,
        "numa_policy": req.numa_policy,
        "request_id": req.request_id,
        "specs": [
            dict({k: v for k, v in spec.items() if k != VGPU_TYPES_TAG},
                 **({VGPU_TYPES_TAG: sorted(vgpu_types_of(spec))}
                    if VGPU_TYPES_TAG in spec else {}))
            for spec in req.spec],
    }
