"""pci_vgpu.conf: option groups, Nova's names and deprecated names."""

import textwrap

import pytest
from oslo_config import cfg

from pci_vgpu import conf


def _load(tmp_path, text):
    path = tmp_path / "pci-vgpu.conf"
    path.write_text(textwrap.dedent(text))
    c = cfg.ConfigOpts()
    conf.register_opts(c)
    c([], default_config_files=[str(path)])
    return c


def test_every_group_is_listed_for_the_generator():
    groups = [group for group, _ in conf.list_opts()]
    assert {"pci", "database", "libvirt", "xenserver", "host"} <= set(groups)


def test_xenserver_password_is_secret():
    opts = dict(conf.list_opts())["xenserver"]
    # The URL may carry credentials (https://root:PASSWORD@host/).
    assert [o.name for o in opts if o.secret] == ["connection_url", "connection_password"]


def test_every_option_has_help_text():
    missing = ["[%s] %s" % (group, opt.name)
               for group, opts in conf.list_opts() for opt in opts
               if not (opt.help or "").strip()]
    assert missing == []


def test_pci_options_keep_novas_names(tmp_path):
    c = _load(tmp_path, """
        [pci]
        alias = {"name": "a", "vendor_id": "10de", "product_id": "1eb8"}
        alias = {"name": "b", "vgpu_types": "nvidia-222"}
        device_spec = {"vendor_id": "10de"}
        """)
    assert len(c.pci.alias) == 2
    assert c.pci.device_spec == ['{"vendor_id": "10de"}']
    assert c.pci.placement_policy == "pack"


@pytest.mark.parametrize("text,option", [
    ("[DEFAULT]\npci_alias = {\"name\": \"a\"}\n", "alias"),
    ("[pci]\npassthrough_whitelist = {\"vendor_id\": \"10de\"}\n",
     "device_spec"),
    ("[DEFAULT]\npci_passthrough_whitelist = {\"vendor_id\": \"10de\"}\n",
     "device_spec"),
])
def test_deprecated_nova_names_still_work(tmp_path, text, option):
    c = _load(tmp_path, text)
    assert len(getattr(c.pci, option)) == 1


def test_placement_policy_choices(tmp_path):
    c = _load(tmp_path, "[pci]\nplacement_policy = diagonal\n")
    with pytest.raises(ValueError, match="diagonal"):
        c.pci.placement_policy


def test_overrides_do_not_leak_between_config_objects():
    first = cfg.ConfigOpts()
    conf.register_opts(first)
    first([], default_config_files=[])
    first.set_override("alias", ['{"name": "x"}'], group="pci")
    second = cfg.ConfigOpts()
    conf.register_opts(second)
    second([], default_config_files=[])
    assert second.pci.alias == []
