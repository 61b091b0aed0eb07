from pci_vgpu import conf


def test_every_group_is_listed_for_the_generator():
    groups = [group for group, _ in conf.list_opts()]
    assert {"pci", "database", "libvirt", "xenserver", "host"} <= set(groups)


def test_xenserver_password_is_secret():
    opts = dict(conf.list_opts())["xenserver"]
    assert [o.name for o in opts if o.secret] == ["connection_password"]
