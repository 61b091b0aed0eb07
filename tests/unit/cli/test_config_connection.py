"""The CLI's configuration loading and ``--connection`` parsing."""

from __future__ import annotations

import pathlib

import pytest
from oslo_config import cfg

from pci_vgpu import conf as pci_conf
from pci_vgpu.cli import config
from pci_vgpu.cli import connection


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    pci_conf.register_opts(c)
    return c


def test_no_file_means_bundled_defaults(monkeypatch, conf):
    monkeypatch.setattr(cfg, "find_config_files", lambda project: [])
    monkeypatch.setattr(cfg, "find_config_dirs", lambda project: [])
    config.load(conf=conf)
    assert conf.config_file == [config.BUNDLED_DEFAULTS]
    assert conf.host.driver == "libvirt"


def test_user_file_replaces_bundled_defaults(tmp_path: pathlib.Path, conf):
    path = tmp_path / "a.conf"
    path.write_text('[pci]\nalias = {"name": "x", "vendor_id": "10de", "product_id": "1eb8"}\n'
                    "[host]\ndriver = noop\nstate_dir = %s\n" % tmp_path)
    config.load([str(path)], conf=conf)
    assert conf.host.driver == "noop"
    assert conf.host.state_dir == str(tmp_path)
    assert len(conf.pci.alias) == 1


def test_reload_forgets_previous_values(tmp_path, conf):
    first = tmp_path / "1.conf"
    first.write_text("[host]\ndriver = noop\n")
    second = tmp_path / "2.conf"
    second.write_text("[host]\nhostname = h2\n")
    config.load([str(first)], conf=conf)
    config.load([str(second)], conf=conf)
    assert conf.host.driver == "libvirt"
    assert conf.host.hostname == "h2"


def test_missing_file_names_the_path(conf):
    with pytest.raises(config.ConfigFileNotFound, match="/no/such.conf"):
        config.load(["/no/such.conf"], conf=conf)


def test_bad_value_names_the_file(tmp_path, conf):
    bad = tmp_path / "bad.conf"
    bad.write_text("[pci]\nplacement_policy = sideways\n")
    with pytest.raises(config.ConfigOptionInvalid) as err:
        config.load([str(bad)], conf=conf)
    assert "[pci] placement_policy" in str(err.value)
    assert "bad.conf" in str(err.value)
    assert "sideways" in str(err.value) and "pack" in str(err.value)


def test_unparsable_file_names_the_file(tmp_path, conf):
    bad = tmp_path / "broken.conf"
    bad.write_text("this is not ini\n")
    with pytest.raises(config.ConfigFileInvalid, match="broken.conf"):
        config.load([str(bad)], conf=conf)


@pytest.mark.parametrize("value, driver, uri", [
    (None, "noop", ""),
    ("libvirt", "libvirt", ""),
    ("xenserver", "xenserver", ""),
    ("test:///tmp/host.xml", "libvirt", "test:///tmp/host.xml"),
    ("qemu:///system", "libvirt", "qemu:///system"),
    ("https://xs1.example", "xenserver", "https://xs1.example"),
    ("http://127.0.0.1:8080", "xenserver", "http://127.0.0.1:8080"),
])
def test_connection_parse(value, driver, uri):
    assert connection.parse(value, "noop") == connection.Connection(driver, uri)


def test_connection_parse_rejects_nonsense():
    with pytest.raises(connection.InvalidConnection, match="'banana'"):
        connection.parse("banana", "libvirt")


def test_apply_sets_the_driver_connection(conf):
    connection.apply(connection.Connection("libvirt", "test:///h.xml"), conf)
    assert conf.libvirt.connection_uri == "test:///h.xml"
    assert conf.host.driver == "libvirt"
    connection.apply(connection.Connection("xenserver", "https://xs"), conf)
    assert conf.xenserver.connection_url == "https://xs"


def test_load_noop_is_cached_per_connection(conf):
    try:
        first = connection.load(connection.Connection("noop"), conf)
        assert first.describe().name == "noop"
        assert connection.load(connection.Connection("noop"), conf) is first
    finally:
        connection.close_all()
