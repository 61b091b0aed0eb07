"""[pci] device_spec parsing and matching, including address-less vGPUs."""

import json

import pytest

from pci_vgpu import devspec
from pci_vgpu import exception
from pci_vgpu import objects

fake_gpu = {"address": "0000:41:00.0", "vendor_id": "10de",
            "product_id": "1eb8", "dev_type": "type-PCI",
            "vgpu_types": {
                "nvidia-222": {"name": "GRID T4-1B", "identifier": None},
                "nvidia-223": {"name": "GRID T4-2Q", "identifier": None},
                "nvidia-224": {"name": "GRID T4-4Q", "identifier": "t4-4q"}}}
fake_mdev = {"address": None, "parent_addr": "0000:41:00.0",
             "vendor_id": "10de", "product_id": "1eb8", "dev_type": "mdev",
             "mdev_type": "nvidia-222",
             "mdev_uuid": "4b20d080-1b54-4048-85b3-a6a62d165c01"}
fake_vf = {"address": "0000:81:10.2", "parent_addr": "0000:81:00.0",
           "vendor_id": "8086", "product_id": "1515", "dev_type": "type-VF"}


def _wl(*specs):
    return devspec.Whitelist([s if isinstance(s, str) else json.dumps(s)
                              for s in specs])


@pytest.mark.parametrize("address,matches", [
    ("0000:41:00.0", True),
    ("*:41:00.0", True),
    (":41:00.", True),
    ("41:00.0", True),
    ("00.0", True),
    ("*:*:*.*", True),
    ("0000:41:*.*", True),
    ("0:41:0.0", True),
    ("0000:42:00.0", False),
    ("0000:41:00.1", False),
    ("0001:41:00.0", False),
])
def test_address_glob(address, matches):
    assert bool(_wl({"address": address}).device_assignable(fake_gpu)) is \
        matches


@pytest.mark.parametrize("regexes,matches", [
    ({"bus": "4[01]"}, True),
    ({"domain": "0000", "bus": "41", "slot": "00", "function": "[0-2]"},
     True),
    ({"function": "[1-7]"}, False),
    ({"bus": "8."}, False),
])
def test_address_regex(regexes, matches):
    assert bool(_wl({"address": regexes}).device_assignable(fake_gpu)) is \
        matches


def test_ids_and_wildcards():
    assert _wl({"vendor_id": "10DE"}).device_assignable(fake_gpu)
    assert _wl({"vendor_id": "10de", "product_id": "*"}).device_assignable(
        fake_gpu)
    assert _wl({}).device_assignable(fake_vf)
    assert not _wl({"product_id": "1eb9"}).device_assignable(fake_gpu)


def test_mdev_without_address_matches_through_parent():
    assert _wl({"address": "0000:41:00.0"}).device_assignable(fake_mdev)
    assert not _wl({"address": "0000:42:00.0"}).device_assignable(fake_mdev)
    orphan = dict(fake_mdev, parent_addr=None)
    assert not _wl({"vendor_id": "10de"}).device_assignable(orphan)


def test_vgpu_types_narrow_offered_types_by_id_name_or_identifier():
    wl = _wl({"address": "0000:41:00.0",
              "vgpu_types": ["nvidia-222", "GRID T4-2Q", "t4-4q"]})
    assert sorted(wl.filter_device(fake_gpu)["vgpu_types"]) == \
        ["nvidia-222", "nvidia-223", "nvidia-224"]
    wl = _wl({"address": "0000:41:00.0", "vgpu_types": "GRID T4-2Q"})
    assert list(wl.filter_device(fake_gpu)["vgpu_types"]) == ["nvidia-223"]
    assert fake_gpu["vgpu_types"].keys() == {"nvidia-222", "nvidia-223",
                                             "nvidia-224"}


def test_vgpu_types_in_spec_narrow_offers_not_existing_mdevs():
    # An existing vGPU occupies its GPU whatever its type: it passes with the
    # GPU, and only the GPU's offered types are narrowed.
    wl = _wl({"vendor_id": "10de", "vgpu_types": ["nvidia-223"]})
    assert wl.device_assignable(fake_mdev) is wl.specs[0]
    assert list(wl.filter_device(fake_gpu)["vgpu_types"]) == ["nvidia-223"]
    other_vendor = _wl({"vendor_id": "8086", "vgpu_types": ["nvidia-222"]})
    assert other_vendor.device_assignable(fake_mdev) is None


def test_first_matching_spec_wins_and_tags_are_kept():
    wl = _wl('[{"vendor_id": "8086", "physical_network": "physnet1"}, '
             '{"vendor_id": "10de", "managed": "no"}]')
    assert wl.device_assignable(fake_vf).get_tags() == {
        "physical_network": "physnet1"}
    spec = wl.device_assignable(fake_gpu)
    assert spec.get_tags() == {"managed": "false"}
    assert wl.filter_device(fake_gpu)["managed"] == "false"


def test_get_devspec_for_objects_including_mdevs():
    wl = _wl({"address": "0000:41:00.0", "vgpu_types": ["nvidia-222"]})
    mdev = objects.PciDevice.create(None, fake_mdev)
    assert wl.get_devspec(mdev) is wl.specs[0]
    other = objects.PciDevice.create(None, dict(fake_mdev,
                                                mdev_type="nvidia-999"))
    assert wl.get_devspec(other) is wl.specs[0]
    elsewhere = objects.PciDevice.create(
        None, dict(fake_mdev, parent_addr="0000:42:00.0"))
    assert wl.get_devspec(elsewhere) is None


def test_devname_matches_device_devname():
    wl = _wl({"devname": "eth3"})
    assert wl.device_assignable(dict(fake_vf, devname="eth3"))
    assert not wl.device_assignable(fake_vf)


def test_empty_whitelist_matches_nothing():
    assert devspec.Whitelist().device_assignable(fake_gpu) is None


BAD_SPECS = [
    ("{not json", exception.PciConfigInvalidSpec, ["'{not json'", "not JSON"]),
    ('"a string"', exception.PciConfigInvalidSpec,
     ["expected a JSON object"]),
    ('[1]', exception.PciConfigInvalidSpec, ["expected a JSON object"]),
    ({"vendor_id": "xyz1"}, exception.PciConfigInvalidSpec,
     ["vendor_id 'xyz1'", "not a hex number"]),
    ({"product_id": "12345"}, exception.PciConfigInvalidSpec,
     ["product_id '12345'", "greater than the maximum FFFF"]),
    ({"address": "0000:41:20.0"}, exception.PciConfigInvalidSpec,
     ["slot '20'", "maximum 1F"]),
    ({"address": "0000:41:00.8"}, exception.PciConfigInvalidSpec,
     ["function '8'", "maximum 7"]),
    ({"address": "1:2:3:4.0"}, exception.PciDeviceWrongAddressFormat,
     ["1:2:3:4.0", "incorrect format"]),
    ({"address": {"bus": "("}}, exception.PciDeviceWrongAddressFormat,
     ["'bus': '('"]),
    ({"address": {"colour": "x"}}, exception.PciDeviceWrongAddressFormat,
     ["colour"]),
    ({"address": 12}, exception.PciDeviceWrongAddressFormat, ["12"]),
    ({"address": "*:41:00.0", "devname": "eth0"},
     exception.PciDeviceInvalidDeviceName,
     ["devname and address", "eth0"]),
    ({"managed": "maybe"}, exception.PciConfigInvalidSpec,
     ["'managed'", "'maybe'", "boolean"]),
    ({"vgpu_types": ["a/b"]}, exception.PciConfigInvalidSpec,
     ["'a/b'", "contains '/'"]),
    ({"vgpu_types": []}, exception.PciConfigInvalidSpec,
     ["vgpu_types []", "non-empty list"]),
]


@pytest.mark.parametrize("spec,exc,words", BAD_SPECS)
def test_bad_device_spec_names_the_value(spec, exc, words):
    with pytest.raises(exc) as err:
        _wl(spec)
    assert isinstance(err.value, exception.PciConfigInvalidSpec)
    for word in words:
        assert word in str(err.value)


def test_pf_exact_address_admits_its_vfs_only():
    wl = _wl({"address": "0000:81:00.0"})
    assert wl.device_assignable(fake_vf)
    assert wl.device_assignable(dict(fake_vf, address="0000:81:00.0", parent_addr=None,
                                     dev_type="type-PF"))
    assert not wl.device_assignable(dict(fake_vf, parent_addr="0000:82:00.0"))
    # Only a VF's parent counts, and only for an exact PF address.
    assert not wl.device_assignable(dict(fake_vf, dev_type="type-PCI"))
    assert not _wl({"address": "0000:81:00.*"}).device_assignable(fake_vf)


# -- a virtual mdev parent, named by mdev_parent ---------------------------
# What the libvirt inventory reports for the kernel's mtty sample: its kernel
# name where a GPU's PCI address goes, the placeholder ids, no NUMA node.
fake_mtty = {"address": "mtty", "vendor_id": "ffff", "product_id": "ffff",
             "dev_type": "type-PCI", "numa_node": None, "virtual_parent": True,
             "vgpu_types": {"mtty-1": {"name": "Single port serial"},
                            "mtty-2": {"name": "Dual port serial"}}}
fake_mtty_mdev = {"address": None, "parent_addr": "mtty",
                  "vendor_id": "ffff", "product_id": "ffff",
                  "dev_type": "mdev", "mdev_type": "mtty-2",
                  "mdev_uuid": "5c482120-1b54-4048-85b3-a6a62d165c01"}


def test_mdev_parent_admits_the_named_parent_and_its_mdevs_only():
    wl = _wl({"mdev_parent": "mtty"})
    assert wl.device_assignable(fake_mtty) is not None
    assert wl.device_assignable(fake_mtty_mdev) is not None
    for other in (fake_gpu, fake_mdev, fake_vf,
                  dict(fake_mtty, address="mdpy"),
                  dict(fake_mtty_mdev, parent_addr="mdpy")):
        assert wl.device_assignable(other) is None


@pytest.mark.parametrize("spec", [
    {}, {"address": "*:*:*.*"}, {"vendor_id": "ffff", "product_id": "ffff"},
    {"address": {"bus": ".*"}},
])
def test_pci_specs_never_admit_a_virtual_parent(spec):
    # Its "address" is a name: no PCI address glob or regex can match it,
    # not even one that names the placeholder ids.
    wl = _wl(spec)
    assert wl.device_assignable(fake_mtty) is None
    assert wl.device_assignable(fake_mtty_mdev) is None


def test_mdev_parent_narrows_types_and_is_not_a_tag():
    wl = _wl({"mdev_parent": "mtty", "vgpu_types": ["Dual port serial"]})
    assert list(wl.filter_device(fake_mtty)["vgpu_types"]) == ["mtty-2"]
    [spec] = wl.specs
    assert (spec.mdev_parent, spec.get_tags(), spec.unknown_keys) == ("mtty", {}, [])


def test_mdev_parent_matches_tracked_objects():
    wl = _wl({"mdev_parent": "mtty"})
    parent = objects.PciDevice.create(None, dict(fake_mtty))
    mdev = objects.PciDevice.create(None, dict(fake_mtty_mdev))
    assert wl.get_devspec(parent) is not None
    assert wl.get_devspec(mdev) is not None
    assert (parent.address, parent.numa_node, mdev.parent_addr) == ("mtty", None, "mtty")


BAD_MDEV_PARENT_SPECS = [
    ({"mdev_parent": "0000:41:00.0"}, ["'0000:41:00.0'", "is a PCI address", '"address"']),
    ({"mdev_parent": "MTTY"}, ["'MTTY'", "kernel name", "/sys/class/mdev_bus"]),
    ({"mdev_parent": "../mtty"}, ["'../mtty'", "kernel name"]),
    ({"mdev_parent": "m..y"}, ["'m..y'", "kernel name"]),
    ({"mdev_parent": "a-very-long-name"}, ["'a-very-long-name'", "1-12"]),
    ({"mdev_parent": ""}, ["''", "kernel name"]),
    ({"mdev_parent": ["mtty"]}, ["['mtty']", "kernel name"]),
    ({"mdev_parent": "mtty", "address": "*:41:00.0"},
     ["'mtty'", "cannot be combined with address", "no PCI address"]),
    ({"mdev_parent": "mtty", "vendor_id": "ffff", "product_id": "ffff"},
     ["cannot be combined with vendor_id, product_id"]),
    ({"mdev_parent": "mtty", "devname": "eth0"}, ["cannot be combined with devname"]),
    ({"mdev_parent": "mtty", "vgpu_types": []}, ["vgpu_types []", "non-empty list"]),
]


@pytest.mark.parametrize("spec,words", BAD_MDEV_PARENT_SPECS)
def test_bad_mdev_parent_is_one_line_naming_the_value(spec, words):
    with pytest.raises(exception.PciConfigInvalidSpec) as err:
        _wl(spec)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message
