"""The Nova 34.0.0 patch series is well-formed (no Nova needed).

tools/check-nova-series does the real verification (apply, git am, Nova's
tests); these checks are the cheap ones every test run can afford: the series
file and the directory agree, each patch is a git format-patch mail with a
Nova-style summary, and the series introduces exactly one migration after
upstream's head.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

SERIES_DIR = pathlib.Path(__file__).resolve().parents[2] / "patches" / "nova-34.0.0"
UPSTREAM_HEAD = "ab450ba04102"


def _series() -> list[str]:
    lines = (SERIES_DIR / "series").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _patch(name: str) -> str:
    return (SERIES_DIR / name).read_text()


def test_series_lists_every_patch_file_in_order() -> None:
    on_disk = sorted(p.name for p in SERIES_DIR.glob("*.patch"))
    assert _series() == on_disk
    assert on_disk, "the series is empty"


def test_patches_are_numbered_consecutively() -> None:
    numbers = [int(name.split("-", 1)[0]) for name in _series()]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("name", _series())
def test_patch_is_a_format_patch_mail_with_nova_style_summary(name: str) -> None:
    text = _patch(name)
    assert text.startswith("From 0000000000000000000000000000000000000000 ")
    subject = re.search(r"^Subject: \[PATCH \d+/\d+\] (.+)$", text, re.M)
    assert subject, "no Subject line in %s" % name
    summary = subject.group(1)
    # Nova's style: "area: what it does", short enough for a one-line log.
    assert re.match(r"^[a-z][a-z0-9_/.]*: \S", summary), summary
    assert len(summary) <= 72, summary
    body = text.split("\n\n", 1)[1].split("\n---\n", 1)[0]
    assert len(body.strip()) > 80, "%s has no commit message body" % name
    assert "\ndiff --git a/" in text


def test_series_adds_one_migration_after_upstream_head() -> None:
    migrations = []
    for name in _series():
        migrations += re.findall(
            r"^\+\+\+ b/(nova/db/main/migrations/versions/\S+\.py)$", _patch(name), re.M)
    assert len(migrations) == 1, migrations
    text = "".join(_patch(n) for n in _series())
    assert re.search(r"^\+down_revision = '%s'$" % UPSTREAM_HEAD, text, re.M)
    revision = re.search(r"^\+revision = '([0-9a-f]{12})'$", text, re.M)
    assert revision, "migration has no revision id"
    assert "_check_%s" % revision.group(1) in text


def test_object_version_bump_updates_the_hash_table() -> None:
    text = "".join(_patch(n) for n in _series())
    assert re.search(r"^\+    VERSION = '1\.8'$", text, re.M)
    assert re.search(r"^\+    'PciDevice': '1\.8-[0-9a-f]{32}',$", text, re.M)


def _commit_message(name: str) -> str:
    body = _patch(name).split("\n\n", 1)[1]
    return re.split(r"\n---\n|\ndiff --git ", body, maxsplit=1)[0]


def _added_file(path: str) -> str:
    """The content of a file the series adds (its '+' lines)."""
    text = "".join(_patch(n) for n in _series())
    hunk = text.split("+++ b/%s\n" % path, 1)[1].split("\ndiff --git", 1)[0]
    return "\n".join(line[1:] for line in hunk.splitlines()
                     if line.startswith("+"))


@pytest.mark.parametrize("name", _series())
def test_patch_has_change_id_and_signed_off_by(name: str) -> None:
    message = _commit_message(name)
    trailers = message.strip().splitlines()[-2:]
    assert re.fullmatch(r"Change-Id: I[0-9a-f]{40}", trailers[0]), trailers
    assert re.fullmatch(r"Signed-off-by: .+ <[^>]+@[^>]+>", trailers[1]), trailers


def test_change_ids_are_unique() -> None:
    ids = [re.search(r"^Change-Id: (\S+)$", _commit_message(n), re.M).group(1)
           for n in _series()]
    assert len(ids) == len(set(ids))


def test_release_notes_cover_feature_upgrade_and_known_issues() -> None:
    text = "".join(_patch(n) for n in _series())
    (note,) = [n for n in re.findall(
        r"^\+\+\+ b/(releasenotes/notes/\S+\.yaml)$", text, re.M)
        if "fragmentation-weigher" not in n]
    body = _added_file(note)
    for section in ("features:", "upgrade:", "issues:"):
        assert re.search(r"^%s$" % section, body, re.M), section
    assert "live migrated" in body
    assert "service version 75" in body


def test_admin_guide_and_config_help_cover_the_new_keys() -> None:
    guide = _added_file("doc/source/admin/pci-tracked-vgpu.rst")
    for words in ("PciPassthroughFilter", "device_spec", "alias",
                  "Moving a GPU from the placement path"):
        assert words in guide
    text = "".join(_patch(n) for n in _series())
    conf = text.split("+++ b/nova/conf/pci.py\n", 1)[1].split(
        "\ndiff --git", 1)[0]
    assert conf.count("vgpu_types") >= 4
    assert "+   pci-tracked-vgpu" in text


def test_service_version_bump_with_history_and_gate() -> None:
    text = "".join(_patch(n) for n in _series())
    assert re.search(r"^-SERVICE_VERSION = 74$", text, re.M)
    assert re.search(r"^\+SERVICE_VERSION = 75$", text, re.M)
    assert re.search(r"^\+    # Version 75: ", text, re.M)
    assert re.search(r"^\+MIN_SERVICE_PCI_VGPU = 75$", text, re.M)


def test_functional_tests_do_not_mock_the_drivers_mdev_code() -> None:
    (name,) = [n for n in _series() if "-functional-" in n]
    added = [line for line in _patch(name).splitlines()
             if line.startswith("+")]
    assert any("test_pci_vgpu_servers.py" in line for line in added)
    for method in ("_create_mdev", "_delete_mdev", "_create_pci_vgpus",
                   "_delete_pci_vgpus", "_with_pci_vgpus"):
        assert not [line for line in added
                    if method in line and "Mock" in line], method


def test_fragmentation_weigher_ships_with_tests_conf_and_note() -> None:
    (name,) = [n for n in _series() if "fragmentation" in n]
    text = _patch(name)
    for path in ("nova/scheduler/weights/pci_vgpu_fragmentation.py",
                 "nova/tests/unit/scheduler/weights/"
                 "test_weights_pci_vgpu_fragmentation.py",
                 "nova/conf/scheduler.py", "doc/source/admin/scheduling.rst"):
        assert "+++ b/" + path in text, path
    assert re.search(r"^\+\+\+ b/releasenotes/notes/pci-vgpu-fragmentation-"
                     r"weigher-\w+\.yaml$", text, re.M)
    assert "pci_vgpu_fragmentation_weight_multiplier" in text


def test_cover_letter_says_what_the_series_does_not_cover() -> None:
    cover = (SERIES_DIR / "README.rst").read_text()
    assert "XenAPI" in cover
    assert "report_in_placement" in cover
    assert "tools/check-nova-series" in cover
    assert "--prepare-only" in cover
    assert "Live migration" in cover


def _run_check(root: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "tools" / "check-nova-series"), *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NOVA_CHECK_DIR": str(root / ".nova-check")})


@pytest.fixture
def repo_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """The check script and the series, without Nova or a venv."""
    shutil.copytree(SERIES_DIR.parents[1] / "tools", tmp_path / "tools")
    shutil.copytree(SERIES_DIR, tmp_path / "patches" / "nova-34.0.0")
    return tmp_path


def test_check_refuses_an_unknown_argument(repo_copy: pathlib.Path) -> None:
    result = _run_check(repo_copy, "--fast")
    assert result.returncode != 0
    assert "'--fast'" in result.stderr and "--concurrency" in result.stderr
    assert "--prepare-only" in result.stderr


def test_check_fails_when_series_and_files_disagree(repo_copy: pathlib.Path) -> None:
    (repo_copy / "patches" / "nova-34.0.0" / "0099-stray.patch").write_text("x\n")
    result = _run_check(repo_copy)
    assert result.returncode != 0
    assert "0099-stray.patch" in result.stderr
    assert not (repo_copy / ".nova-check" / "cache").exists(), "it went on to download"
