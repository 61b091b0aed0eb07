"""Aliases, flavor requests and vGPU type names (pci_vgpu.request)."""

import json

import pytest
from oslo_config import cfg

from pci_vgpu import conf
from pci_vgpu import exception
from pci_vgpu import objects
from pci_vgpu import request

T4 = {"name": "t4", "vendor_id": "10de", "product_id": "1eb8",
      "vgpu_types": ["nvidia-223", "nvidia-222"], "numa_policy": "preferred"}
VF = {"name": "vf", "vendor_id": "8086", "product_id": "1515",
      "device_type": "type-VF"}


def _conf(*aliases):
    c = cfg.ConfigOpts()
    conf.register_opts(c)
    c([], default_config_files=[])
    c.set_override("alias", [a if isinstance(a, str) else json.dumps(a)
                             for a in aliases], group="pci")
    return c


def _flavor(value, **extra):
    return {"extra_specs": dict({"pci_passthrough:alias": value}, **extra)}


# -- aliases -----------------------------------------------------------------


def test_alias_spec_shape():
    aliases = request.get_alias_from_config(_conf(T4, VF))
    assert aliases == {
        "t4": ("preferred", [{"vendor_id": "10de", "product_id": "1eb8",
                              "vgpu_types": '["nvidia-222", "nvidia-223"]'}]),
        "vf": ("legacy", [{"vendor_id": "8086", "product_id": "1515",
                           "dev_type": "type-VF"}]),
    }


@pytest.mark.parametrize("spelling", [
    {"vgpu_types": ["nvidia-222", "nvidia-223"]},
    {"vgpu_types": ["nvidia-223", "nvidia-222", "nvidia-222"]},
    {"capabilities": {"vgpu_types": ["nvidia-223", "nvidia-222"]}},
    {"vgpu_types": ["nvidia-222", "nvidia-223"],
     "capabilities": {"vgpu_types": ["nvidia-223", "nvidia-222"]}},
])
def test_both_vgpu_types_spellings_give_equal_requests(spelling):
    base = {"name": "t4", "vendor_id": "10de", "product_id": "1eb8"}
    reference = dict(base, vgpu_types=["nvidia-222", "nvidia-223"])
    flavor = _flavor("t4:2")
    got = request.get_pci_requests_from_flavor(
        flavor, _conf(dict(base, **spelling))).requests[0]
    want = request.get_pci_requests_from_flavor(
        flavor, _conf(reference)).requests[0]
    assert (got.spec, got.count, got.numa_policy, got.alias_name) == \
        (want.spec, want.count, want.numa_policy, want.alias_name)
    assert got.spec == [{"vendor_id": "10de", "product_id": "1eb8",
                         "vgpu_types": '["nvidia-222", "nvidia-223"]'}]


def test_single_vgpu_type_string_equals_one_element_list():
    one = dict(T4, vgpu_types="nvidia-222")
    lst = dict(T4, vgpu_types=["nvidia-222"])
    assert request.get_alias_from_config(_conf(one)) == \
        request.get_alias_from_config(_conf(lst))


def test_vgpu_alias_needs_no_ids_but_pci_alias_does():
    only_types = {"name": "any-t4", "vgpu_types": "nvidia-222"}
    assert request.get_alias_from_config(_conf(only_types))["any-t4"][1] == \
        [{"vgpu_types": '["nvidia-222"]'}]


def test_same_alias_twice_ors_the_specs():
    other = dict(VF, product_id="10ed")
    policy, specs = request.get_alias_from_config(_conf(VF, other))["vf"]
    assert [s["product_id"] for s in specs] == ["1515", "10ed"]


def test_live_migratable_is_normalised():
    alias = dict(VF, live_migratable="yes")
    assert request.get_alias_from_config(_conf(alias))["vf"][1][0][
        "live_migratable"] == "true"


def test_config_changes_are_seen_without_cache_clear():
    c = _conf(VF)
    assert list(request.get_alias_from_config(c)) == ["vf"]
    c.set_override("alias", [json.dumps(T4)], group="pci")
    assert list(request.get_alias_from_config(c)) == ["t4"]


def test_returned_aliases_are_copies():
    c = _conf(VF)
    request.get_alias_from_config(c)["vf"][1][0]["vendor_id"] = "ffff"
    assert request.get_alias_from_config(c)["vf"][1][0]["vendor_id"] == "8086"


BAD_ALIASES = [
    # (alias, exception, words the message must contain)
    ('{"name": "t4", ', exception.PciAliasMalformedJson,
     ["'{\"name\": \"t4\", '", "not a JSON object"]),
    ('["t4"]', exception.PciAliasMalformedJson, ["got list"]),
    (dict(VF, colour="red"), exception.PciAliasInvalidKey,
     ["'vf'", "'colour'", "'red'", "unknown key", "allowed keys: name"]),
    ({"vendor_id": "8086", "product_id": "1515"}, exception.PciAliasInvalidKey,
     ["'name'", "is required"]),
    (dict(VF, vendor_id="80866"), exception.PciAliasInvalidKey,
     ["'vf'", "'vendor_id'", "'80866'", "4 hexadecimal digits"]),
    (dict(VF, product_id="xyz1"), exception.PciAliasInvalidKey,
     ["'product_id'", "'xyz1'", "4 hexadecimal digits"]),
    (dict(VF, device_type="mdev"), exception.PciAliasInvalidKey,
     ["'device_type'", "'mdev'", "one of type-PCI, type-PF, type-VF"]),
    (dict(VF, numa_policy="strict"), exception.PciAliasInvalidKey,
     ["'numa_policy'", "'strict'", "required, legacy, preferred, socket"]),
    (dict(VF, name=""), exception.PciAliasInvalidKey,
     ["'name'", "non-empty string"]),
    (dict(VF, name="   "), exception.PciAliasInvalidKey,
     ["'name'", "value '   '", "non-empty string"]),
    (dict(VF, live_migratable="perhaps"), exception.PciAliasInvalidKey,
     ["'live_migratable'", "'perhaps'", "boolean"]),
    (dict(T4, vgpu_types=[]), exception.PciAliasInvalidKey,
     ["'vgpu_types'", "non-empty list"]),
    (dict(T4, vgpu_types=["../../etc"]), exception.PciAliasInvalidKey,
     ["'t4'", "'../../etc'", "contains '/'"]),
    (dict(T4, vgpu_types="nvidia..222"), exception.PciAliasInvalidKey,
     ["'nvidia..222'", "contains '..'"]),
    (dict(T4, capabilities={"vgpu_types": ["a/b"]}),
     exception.PciAliasInvalidKey,
     ["'capabilities.vgpu_types'", "'a/b'", "contains '/'"]),
    (dict(T4, capabilities={"colour": "x"}), exception.PciAliasInvalidKey,
     ["'capabilities'", "unknown capability 'colour'"]),
    (dict(T4, capabilities={"vgpu_types": "nvidia-999"}),
     exception.PciAliasInvalidKey,
     ["'capabilities.vgpu_types'", "disagrees with vgpu_types"]),
    ({"name": "bare", "vendor_id": "10de"}, exception.PciAliasMissingIds,
     ["PCI alias bare", "vendor_id and product_id"]),
]


@pytest.mark.parametrize("alias,exc,words", BAD_ALIASES)
def test_bad_alias_raises_typed_error_naming_the_value(alias, exc, words):
    with pytest.raises(exc) as err:
        request.get_alias_from_config(_conf(alias))
    assert isinstance(err.value, exception.PciInvalidAlias)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("second,key,values", [
    (dict(VF, numa_policy="required"), "numa_policy", ["'legacy'",
                                                       "'required'"]),
    (dict(VF, device_type="type-PF"), "device_type", ["'type-VF'",
                                                      "'type-PF'"]),
    ({"name": "vf", "vendor_id": "8086", "product_id": "1515"},
     "device_type", ["'type-VF'", "None"]),
])
def test_duplicate_alias_with_conflicting_policy(second, key, values):
    with pytest.raises(exception.PciAliasConflict) as err:
        request.get_alias_from_config(_conf(VF, second))
    message = str(err.value)
    assert "PCI alias vf is defined more than once" in message
    assert "different %s" % key in message
    for value in values:
        assert value in message


# -- flavors -----------------------------------------------------------------


def test_flavor_gives_one_request_per_entry_with_own_request_id():
    reqs = request.get_pci_requests_from_flavor(_flavor("t4:1, vf:2"),
                                                _conf(T4, VF))
    assert isinstance(reqs, objects.InstancePCIRequests)
    assert [(r.alias_name, r.count, r.numa_policy) for r in reqs.requests] \
        == [("t4", 1, "preferred"), ("vf", 2, "legacy")]
    assert len({r.request_id for r in reqs.requests}) == 2
    assert all(r.requester_id is None and r.source == r.FLAVOR_ALIAS
               for r in reqs.requests)


def test_flavor_policy_overrides_alias_policy():
    reqs = request.get_pci_requests_from_flavor(
        _flavor("t4:1,vf:1", **{"hw:pci_numa_affinity_policy": "socket"}),
        _conf(T4, VF))
    assert [r.numa_policy for r in reqs.requests] == ["socket", "socket"]


def test_explicit_affinity_policy_wins():
    reqs = request.get_pci_requests_from_flavor(
        _flavor("t4:1", **{"hw:pci_numa_affinity_policy": "socket"}),
        _conf(T4), affinity_policy="required")
    assert reqs.requests[0].numa_policy == "required"


def test_flavor_object_with_attribute_and_without_alias():
    class Flavor:
        extra_specs = {"pci_passthrough:alias": "vf:1"}

    assert len(request.get_pci_requests_from_flavor(
        Flavor(), _conf(VF)).requests) == 1
    assert request.get_pci_requests_from_flavor(
        {"extra_specs": {}}, _conf("not json")).requests == []


def test_requests_serialise_and_specs_are_independent_copies():
    reqs = request.get_pci_requests_from_flavor(_flavor("vf:1,vf:1"),
                                                _conf(VF))
    reqs.requests[0].spec[0]["vendor_id"] = "ffff"
    assert reqs.requests[1].spec[0]["vendor_id"] == "8086"
    back = objects.InstancePCIRequests.obj_from_primitive(
        reqs.obj_to_primitive())
    assert back.requests[1].spec == reqs.requests[1].spec


BAD_FLAVORS = [
    ("t4", exception.PciFlavorAliasEntryInvalid,
     ["entry 't4'", "<alias name>:<count>"]),
    ("t4:1:2", exception.PciFlavorAliasEntryInvalid, ["entry 't4:1:2'"]),
    ("t4:0", exception.PciFlavorAliasEntryInvalid,
     ["'0' is not a positive integer"]),
    ("t4:-1", exception.PciFlavorAliasEntryInvalid,
     ["'-1' is not a positive integer"]),
    ("t4:two", exception.PciFlavorAliasEntryInvalid,
     ["'two' is not a positive integer"]),
    ("t4:1,", exception.PciFlavorAliasEntryInvalid,
     ["entry ''", "pci_passthrough:alias='t4:1,'", "empty entry"]),
    (":1", exception.PciFlavorAliasEntryInvalid, ["alias name is empty"]),
    ("a100:1", exception.PciRequestAliasNotDefined,
     ["PCI alias a100", "not defined", "(defined: t4, vf)"]),
]


@pytest.mark.parametrize("value,exc,words", BAD_FLAVORS)
def test_bad_flavor_raises_typed_error_naming_the_entry(value, exc, words):
    with pytest.raises(exc) as err:
        request.get_pci_requests_from_flavor(_flavor(value), _conf(T4, VF))
    for word in words:
        assert word in str(err.value)


def test_bad_flavor_numa_policy():
    with pytest.raises(exception.PciInvalidNumaPolicy) as err:
        request.get_pci_requests_from_flavor(
            _flavor("t4:1", **{"hw:pci_numa_affinity_policy": "loose"}),
            _conf(T4))
    assert "'loose'" in str(err.value)
    assert "hw:pci_numa_affinity_policy" in str(err.value)
    assert "required, legacy, preferred, socket" in str(err.value)


# -- vGPU type names -----------------------------------------------------------


@pytest.mark.parametrize("name", [
    "nvidia-222", "GRID T4-2Q", "i915-GVTg_V5_4", "NVIDIA A16-4C",
    "a", "x" * 128, "mtty-1 (2 ports)", "v1.0+r@x:y,z",
])
def test_valid_type_names(name):
    assert request.validate_vgpu_type_name(name) == name


@pytest.mark.parametrize("name,reason", [
    ("", "empty"),
    ("x" * 129, "longer than 128"),
    ("nvidia/222", "contains '/'"),
    ("a..b", "contains '..'"),
    ("..", "contains '..'"),
    ("nvidia\n222", "control character"),
    ("-nvidia", "does not start with a letter or digit"),
    (" nvidia", "does not start with a letter or digit"),
    ("nvidia$222", "contains '$'"),
    ("nvidia;rm", "contains ';'"),
    (222, "not a string"),
    ("éclair", "does not start"),
])
def test_invalid_type_names(name, reason):
    with pytest.raises(exception.InvalidVgpuTypeName) as err:
        request.validate_vgpu_type_name(name)
    assert repr(name) in str(err.value)
    assert reason in str(err.value)
    assert "allowed:" in str(err.value)


def test_vgpu_types_of():
    assert request.vgpu_types_of({"vendor_id": "10de"}) == frozenset()
    assert request.vgpu_types_of(
        {"vgpu_types": '["nvidia-222", "nvidia-223"]'}) == \
        frozenset({"nvidia-222", "nvidia-223"})
    for bad in ("nvidia-222", '{"a": 1}', "[1]"):
        with pytest.raises(exception.InvalidVgpuTypesSpec, match="vgpu_types"):
            request.vgpu_types_of({"vgpu_types": bad})


def test_describe_request_decodes_vgpu_types_for_people():
    req = request.get_pci_requests_from_flavor(_flavor("t4:2,vf:1"),
                                               _conf(T4, VF)).requests
    t4, vf = (request.describe_request(r) for r in req)
    assert t4 == {"alias_name": "t4", "count": 2, "numa_policy": "preferred",
                  "request_id": req[0].request_id,
                  "specs": [{"vendor_id": "10de", "product_id": "1eb8",
                             "vgpu_types": ["nvidia-222", "nvidia-223"]}]}
    assert vf["specs"] == [{"vendor_id": "8086", "product_id": "1515",
                            "dev_type": "type-VF"}]
    json.dumps([t4, vf])
