"""The checked-in etc/pci-vgpu.conf.sample must match the options in code."""

import difflib
import importlib.metadata
import pathlib

from oslo_config import generator

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "pci-vgpu.conf.sample"
GENERATOR_CONF = ROOT / "etc" / "oslo-config-generator" / "pci-vgpu.conf"
HOW_TO_FIX = "Regenerate it with: tools/generate-sample-config"


def test_entry_point_is_registered_for_the_generator():
    points = importlib.metadata.entry_points(group="oslo.config.opts")
    values = {p.name: p.value for p in points}
    assert values.get("pci_vgpu") == "pci_vgpu.conf:list_opts", (
        "pci_vgpu is not installed with its oslo.config.opts entry point; "
        "run ./dev or pip install -e .")


def test_checked_in_sample_is_current(tmp_path):
    fresh = tmp_path / "pci-vgpu.conf.sample"
    generator.main(["--config-file", str(GENERATOR_CONF),
                    "--output-file", str(fresh)])
    expected = fresh.read_text().splitlines(keepends=True)
    actual = SAMPLE.read_text().splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(
        actual, expected, "etc/pci-vgpu.conf.sample (checked in)",
        "generated from pci_vgpu/conf"))
    assert not diff, "%s is out of date. %s\n%s" % (SAMPLE.name, HOW_TO_FIX,
                                                   diff)


def test_sample_documents_the_pci_group():
    text = SAMPLE.read_text()
    assert "[pci]" in text
    for name in ("#alias =", "#device_spec =", "#placement_policy = pack",
                 "Deprecated group/name - [DEFAULT]/pci_alias",
                 "Deprecated group/name - [pci]/passthrough_whitelist"):
        assert name in text
