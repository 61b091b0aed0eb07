"""``--flavor`` resolution: configured name, JSON file, inline extra specs."""

from __future__ import annotations

import json

import pytest
from oslo_config import cfg

from pci_vgpu import conf as pci_conf
from pci_vgpu.cli import flavors


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    pci_conf.register_opts(c)
    flavors.register_opts(c)
    c([])
    return c


def test_configured_name(conf):
    conf.set_override("flavor", ['{"name": "t4-small", "extra_specs": '
                                 '{"pci_passthrough:alias": "t4-1b:1"}}'], group="cli")
    flavor = flavors.resolve("t4-small", conf)
    assert flavor == flavors.Flavor("t4-small", {"pci_passthrough:alias": "t4-1b:1"})


def test_file_with_name_and_extra_specs(tmp_path, conf):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"name": "big", "extra_specs": {"pci_passthrough:alias": "v:2"}}))
    assert flavors.resolve(str(path), conf).extra_specs == {"pci_passthrough:alias": "v:2"}


def test_file_with_bare_extra_specs_is_named_after_the_file(tmp_path, conf):
    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"pci_passthrough:alias": "v:2"}))
    flavor = flavors.resolve(str(path), conf)
    assert (flavor.name, flavor.extra_specs) == ("bare.json", {"pci_passthrough:alias": "v:2"})


def test_inline_specs(conf):
    flavor = flavors.resolve("pci_passthrough:alias=a:1,b:2 hw:pci_numa_affinity_policy=required",
                             conf)
    assert flavor.extra_specs == {"pci_passthrough:alias": "a:1,b:2",
                                  "hw:pci_numa_affinity_policy": "required"}


@pytest.mark.parametrize("value", ["t4-unknown", "alias", "=x", "k="])
def test_bad_inline_names_the_word(value, conf):
    with pytest.raises(flavors.InvalidFlavor) as err:
        flavors.resolve(value, conf)
    assert repr(value) in str(err.value)
    assert "KEY=VALUE" in str(err.value)


def test_bad_json_file_names_the_file(tmp_path, conf):
    path = tmp_path / "broken.json"
    path.write_text("{nope")
    with pytest.raises(flavors.InvalidFlavor, match="broken.json"):
        flavors.resolve(str(path), conf)


def test_non_string_extra_spec_is_refused(tmp_path, conf):
    path = tmp_path / "num.json"
    path.write_text(json.dumps({"name": "n", "extra_specs": {"pci_passthrough:alias": 3}}))
    with pytest.raises(flavors.InvalidFlavor, match="object of strings"):
        flavors.resolve(str(path), conf)
