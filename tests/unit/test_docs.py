"""The README and the other reStructuredText documents must render cleanly:
a malformed table or section silently hides what an operator reads."""

from __future__ import annotations

import pathlib

import docutils.core
import docutils.utils
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.rst", ROOT / "benchmarks" / "README.rst",
     ROOT / "migrations" / "README.rst"]
    + list((ROOT / "doc").glob("*.rst"))
    + list((ROOT / "patches").glob("*/README.rst")))


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_document_renders_without_warnings(path: pathlib.Path) -> None:
    try:
        docutils.core.publish_doctree(
            path.read_text(), source_path=str(path),
            settings_overrides={"report_level": 2, "halt_level": 2})
    except docutils.utils.SystemMessage as exc:
        pytest.fail("%s does not render: %s" % (path.relative_to(ROOT), exc))


def test_quick_start_is_exactly_two_commands() -> None:
    text = (ROOT / "README.rst").read_text()
    section = text.split("Quick start\n===========\n", 1)[1].split("\n\n\n", 1)[0]
    block = section.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./dev demo", "./dev test"]
