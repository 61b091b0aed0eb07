"""Host side of the kernel tier: boot the kernel-lab guest, run tests/kernel.

Runs ``tools/kernel-lab run`` (downloads and builds on first use, cached in
``.cache/kernel-lab``), which executes this project's pytest on the
``kernel``-marked tests inside the guest, and checks its JUnit report: some
tests ran, none failed, none was skipped.  Without QEMU it fails when ``CI``
is set and is skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.kernel.conftest import in_guest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(REPO, "tools", "kernel-lab")
#: Whole boot + in-guest pytest; the runner enforces it on QEMU.
GUEST_TIMEOUT_S = 540


def _qemu_or_skip() -> None:
    if shutil.which("qemu-system-x86_64"):
        return
    reason = "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI is set, so the kernel tier must run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def guest_run(tmp_path_factory):
    """One guest boot for the module: its rc, JUnit report and logs."""
    if in_guest():
        pytest.skip("already inside the kernel-lab guest")
    _qemu_or_skip()
    cache = os.path.join(os.environ.get("PCI_VGPU_CACHE", os.path.join(REPO, ".cache")),
                         "kernel-lab", "runs")
    os.makedirs(cache, exist_ok=True)
    # Not under /tmp: the guest mounts a fresh tmpfs there.
    out = os.path.join(cache, "pytest-%d" % os.getpid())
    shutil.rmtree(out, ignore_errors=True)
    junit = os.path.join(out, "junit.xml")
    cmd = [LAB, "run", "--timeout", str(GUEST_TIMEOUT_S), "--out", out, "--",
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "kernel",
           "--junitxml", junit, "-o", "junit_family=xunit2", "tests/kernel"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=GUEST_TIMEOUT_S + 300)
    output = ""
    if os.path.exists(os.path.join(out, "output.log")):
        with open(os.path.join(out, "output.log")) as handle:
            output = handle.read()
    return done, junit, output


def test_guest_tests_all_pass(guest_run):
    done, junit, output = guest_run
    sys.stderr.write(done.stderr)  # the phase timings, kept by -rA / on failure
    assert os.path.exists(junit), "no JUnit report (rc %d):\n%s\n%s" % (
        done.returncode, done.stderr[-3000:], output[-3000:])
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] > 0, counts
    assert (counts["failures"], counts["errors"], counts["skipped"]) == (0, 0, 0), (
        counts, output[-6000:])
    assert done.returncode == 0, done.stderr[-3000:]
