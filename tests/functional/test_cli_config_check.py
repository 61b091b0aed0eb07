"""``config check``: each problem is one row naming the key and the value."""

from __future__ import annotations

import json
import typing as ty

import pytest

from tests.functional.cli_runner import Cli

PROBLEMS = "\n".join([
    "[pci]",
    'device_spec = {"vendor_id": "1002"}',
    'device_spec = {"vendor_id": "10de", "product_id": "1db4", "vgpu_types": ["nvidia-181"]}',
    'alias = {"name": "v100-4q", "vendor_id": "10de", "product_id": "1db4", '
    '"vgpu_types": "nvidia-183"}',
    'alias = {"name": "t4-1b", "vendor_id": "10de", "product_id": "1eb8", '
    '"vgpu_types": "nvidia-222", "numa_policy": "preferred"}',
    "[cli]",
    'flavor = {"name": "typo", "extra_specs": {"pci_passthrough:alias": "t4-1bb:1"}}',
    'flavor = {"name": "strict", "extra_specs": {"pci_passthrough:alias": "t4-1b:1", '
    '"hw:pci_numa_affinity_policy": "required"}}',
    ""])


@pytest.fixture
def cli(tmp_path: ty.Any) -> ty.Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.close()


def test_bundled_defaults_pass_on_both_hosts(cli):
    for connection in ("libvirt", "xenserver"):
        rows = cli.json("config", "check", "--connection", connection)
        assert {r["level"] for r in rows} <= {"warning", "ok"}


def test_problems_are_named(tmp_path):
    cli = Cli(tmp_path, extra_conf=PROBLEMS, bundled=False)
    try:
        rows = cli.json("config", "check", "--connection", "libvirt", expect=1)
    finally:
        cli.close()
    found = {(r["level"], r["key"], r["value"]) for r in rows}
    assert ("error", "[pci] device_spec", json.dumps({"vendor_id": "1002"})) in found
    assert ("error", "[pci] alias", "v100-4q") in found
    assert ("error", "[cli] flavor", "typo") in found
    assert ("warning", "[cli] flavor", "strict") in found
    by_value = {r["value"]: r["problem"] for r in rows}
    assert "nvidia-183" in by_value["v100-4q"] and "nvidia-181" in by_value["v100-4q"]
    assert "t4-1bb" in by_value["typo"]


def test_invalid_alias_json_is_one_row(tmp_path):
    cli = Cli(tmp_path, extra_conf='[pci]\nalias = {"name": "x", "vendor_id": "zz"}\n')
    try:
        rows = cli.json("config", "check", "--connection", "libvirt", expect=1)
    finally:
        cli.close()
    [row] = [r for r in rows if r["level"] == "error"]
    assert row["key"] == "[pci] alias" and "zz" in row["problem"]


def test_unreachable_hypervisor_is_reported(cli):
    rows = cli.json("config", "check", "--connection", "test:///no/such/host.xml", expect=1)
    assert rows[0]["level"] == "error" and "/no/such/host.xml" in rows[0]["problem"]


TYPOS = "\n".join([
    "[databse]",
    "connection = mysql+pymysql://nova:s3cret@db.example/nova",
    "[pci]",
    "alias_x = 1",
    'device_spec = {"vendor_id": "10de", "vendorid": "1eb8"}',
    ""])


def test_unknown_sections_options_and_spec_keys_are_errors_and_warnings(tmp_path):
    cli = Cli(tmp_path, extra_conf=TYPOS)
    try:
        rows = cli.json("config", "check", "--connection", "libvirt", expect=1)
        start_warnings = cli.stderr
        cli("pool", "list", "--connection", "libvirt")
        every_start = cli.stderr
    finally:
        cli.close()
    errors = {r["value"]: r["problem"] for r in rows if r["level"] == "error"}
    [section] = [v for v in errors if v.startswith("[databse]")]
    assert "did you mean database?" in errors[section] and "defaults" in errors[section]
    [option] = [v for v in errors if v.startswith("[pci] alias_x")]
    assert "did you mean alias?" in errors[option]
    assert "did you mean vendor_id?" in errors["[pci] device_spec key 'vendorid'"]
    for text in (start_warnings, every_start):
        assert text.count("WARNING") == 3 and "[databse]" in text and "'vendorid'" in text
    assert "s3cret" not in start_warnings + every_start + json.dumps(rows)


@pytest.mark.parametrize("entry, words", [
    ('device_spec = {"vendor_id": 4318}', "vendor_id 4318"),
    ('alias = {"name": "dup", "vendor_id": "10de", "product_id": "1eb8", '
     '"vgpu_types": "nvidia-222"}\n'
     'alias = {"name": "dup", "vendor_id": "10de", "product_id": "1eb8", '
     '"vgpu_types": "nvidia-223"}', "PCI alias dup is defined twice"),
])
def test_bad_values_are_refused_by_every_command(tmp_path, entry, words):
    cli = Cli(tmp_path, extra_conf="[pci]\n%s\n" % entry)
    try:
        cli("server", "create", "vm1", "--flavor", "t4-small", expect=1)
        assert words in cli.stderr
        rows = cli.json("config", "check", expect=1)
        assert any(words in r["problem"] for r in rows if r["level"] == "error")
    finally:
        cli.close()
