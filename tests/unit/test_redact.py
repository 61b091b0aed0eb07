"""pci_vgpu.redact: secrets never reach a message or a log line."""

from __future__ import annotations

import io
import logging

import pytest

from pci_vgpu import redact

SECRET = "S3cr3t-Pa55"


@pytest.mark.parametrize("text,expected", [
    ("http://root:%s@xen1/" % SECRET, "http://root:***@xen1/"),
    ("https://root:%s@10.0.0.1:443/path" % SECRET,
     "https://root:***@10.0.0.1:443/path"),
    ("mysql+pymysql://nova:%s@db/nova?charset=utf8" % SECRET,
     "mysql+pymysql://nova:***@db/nova?charset=utf8"),
    ("mysql+pymysql://nova@db/nova?password=%s&charset=utf8" % SECRET,
     "mysql+pymysql://nova@db/nova?password=***&charset=utf8"),
    ("postgresql://u@h/d?sslpassword=%s" % SECRET,
     "postgresql://u@h/d?sslpassword=***"),
    ('{"connection_password": "%s", "user": "root"}' % SECRET,
     '{"connection_password": "***", "user": "root"}'),
    ("cannot open 'http://root:%s@h/': refused" % SECRET,
     "cannot open 'http://root:***@h/': refused"),
    ("token=%s; other=1" % SECRET, "token=***; other=1"),
    ("pwd=%s" % SECRET, "pwd=***"),
    ('{"password": "two %s words"}' % SECRET, '{"password": "***"}'),
])
def test_mask_hides_the_secret(text: str, expected: str) -> None:
    assert redact.mask(text) == expected
    assert SECRET not in redact.mask(text)


@pytest.mark.parametrize("text", [
    "GPU 0000:41:00.0 has no free vGPU of type nvidia-222",
    "http://xen1/ refused",
    "qemu:///system", "test:///tmp/host.xml",
    "sqlite:////var/lib/pci-vgpu/pci_vgpu.sqlite",
    "cwd=/tmp user=root", "mysql+pymysql://nova@db/nova",
    "unknown device_spec key: 'vendor'; allowed: address, vendor_id",
    "",
])
def test_mask_leaves_other_text_alone(text: str) -> None:
    assert redact.mask(text) == text


def test_mask_is_idempotent() -> None:
    text = "http://root:%s@h/?password=%s" % (SECRET, SECRET)
    once = redact.mask(text)
    assert redact.mask(once) == once
    assert SECRET not in once


def test_protected_handler_masks_messages_args_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("pci_vgpu.test_redact")
    logger.propagate = False
    logger.addHandler(redact.protect_handler(handler))
    try:
        logger.warning("connecting to %s", "http://root:%s@xen/" % SECRET)
        try:
            raise RuntimeError("refused by mysql://u:%s@db/x" % SECRET)
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out
    assert "WARNING connecting to http://root:***@xen/" in out
    assert "refused by mysql://u:***@db/x" in out


def test_protect_handler_twice_adds_one_filter() -> None:
    handler = logging.StreamHandler(io.StringIO())
    redact.protect_handler(handler)
    redact.protect_handler(handler)
    assert sum(isinstance(f, redact.SecretsFilter)
               for f in handler.filters) == 1
