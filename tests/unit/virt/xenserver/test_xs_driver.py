"""XenServerDriver against the simulator: spawn, failures with rollback, hooks."""

from __future__ import annotations

import logging
import typing as ty

import pytest
import stevedore

from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt.driver import GuestSpec
from pci_vgpu.virt.driver import VirtDriver
from pci_vgpu.virt.xenserver.driver import XenServerDriver
from pci_vgpu.virt.xenserver.simulator import Simulator
from pci_vgpu.virt.xenserver.simulator import ops
from tests.fixtures import xapi
from tests.fixtures.xapi import grid_k2  # noqa: F401  (pytest fixture)
from tests.fixtures.xapi import mixed_host  # noqa: F401  (pytest fixture)
from tests.fixtures.xapi import xs_driver as driver  # noqa: F401  (pytest fixture)

GUEST = GuestSpec(uuid="5f0c6a4e-5d4c-4a44-9d0e-0a1b2c3d4e5f", name="guest-1", memory_mb=2048, vcpus=2)
MDEV_A = "0b1c8f4e-7a52-4a37-9c53-3f0b2f6f6d11"
MDEV_B = "7d3e2a10-1f0e-4b6c-8a9d-2c4b6e8f0a13"


def host_state(sim: Simulator) -> dict[str, ty.Any]:
    """What spawn may change: VMs, VGPUs and what runs on each pGPU."""
    return {"vms": sorted(sim.db.tables["VM"]), "vgpus": sorted(sim.db.tables["VGPU"]),
            "resident": [len(sim.db.where("VGPU", "resident_on", p)) for p in sim.db.refs("PGPU")]}


def occupy(drv: XenServerDriver, address: str, model: str, n: int = 1) -> None:
    """Run ``n`` other guests each with one ``model`` vGPU claimed on ``address``."""
    for i in range(n):
        uuid = "00000000-0000-4000-8000-%012d" % (hash((address, model, i)) % 10**12)
        drv.spawn(GuestSpec(uuid=uuid, name="other-%d" % i), [xapi.make_vgpu(address, model)])


def test_loaded_by_stevedore(grid_k2: Simulator) -> None:
    mgr: ty.Any = stevedore.DriverManager("pci_vgpu.virt_drivers", "xenserver", invoke_on_load=True,
                                  invoke_kwds={"conf": xapi.make_conf(grid_k2.url)})
    try:
        assert isinstance(mgr.driver, VirtDriver)
        info = mgr.driver.describe()
        assert (info.name, info.hot_plug, info.vgpu_backends) == ("xenserver", False, ("xenapi",))
        assert info.connection == "%s as root" % grid_k2.url
        assert xapi.PASSWORD not in info.connection
    finally:
        mgr.driver.close()


def test_spawn_xapi_calls_golden(grid_k2: Simulator, driver: XenServerDriver) -> None:
    devices = [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)]
    driver.prepare_vgpu(devices[0])
    grid_k2.calls.clear()
    driver.spawn(GUEST, devices)
    writes = [(m, a) for m, a in grid_k2.calls if not m.split(".")[1].startswith("get_")]
    xapi.compare_to_golden("spawn_one_k240q", writes)


def test_spawn_runs_vm_with_tagged_vgpu(grid_k2: Simulator, driver: XenServerDriver) -> None:
    driver.spawn(GUEST, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)])
    [vm] = grid_k2.db.tables["VM"].values()
    assert vm["power_state"] == "Running" and vm["memory_static_max"] == str(2048 * 1024 * 1024)
    [vgpu] = grid_k2.db.tables["VGPU"].values()
    assert vgpu["other_config"] == {"nova-instance-uuid": GUEST.uuid, "pci-vgpu-uuid": MDEV_A}
    assert xapi.resident_on(grid_k2, MDEV_A) == "0000:08:00.0"
    [guest] = driver.list_guests()
    assert (guest.uuid, guest.running, guest.mdev_uuids) == (GUEST.uuid, True, (MDEV_A,))


def test_two_vgpus_in_one_vm(mixed_host: Simulator) -> None:
    drv = XenServerDriver(conf=xapi.make_conf(mixed_host.url))
    try:
        drv.spawn(GUEST, [xapi.make_vgpu("0000:af:00.0", "GRID T4-8Q", MDEV_A, product_id="1eb8"),
                          xapi.make_vgpu("0000:af:00.0", "GRID T4-8Q", MDEV_B, product_id="1eb8")])
        devices = {v.mdev_uuid: v for v in drv.list_vgpus()}
        assert set(devices) == {MDEV_A, MDEV_B}
        # breadth_first: XAPI spreads the two over both T4s.
        assert {v.parent_addr for v in devices.values()} == {"0000:af:00.0", "0000:d8:00.0"}
    finally:
        drv.close()


def test_request_type_by_identifier(grid_k2: Simulator, driver: XenServerDriver) -> None:
    ident = "0001:nvidia,0x11bf,0x100a,0x118d,0x101f"  # GRID K260Q
    driver.spawn(GUEST, [xapi.make_vgpu("0000:08:00.0", ident, MDEV_A)])
    assert driver.list_vgpus()[0].vgpu_type == "GRID K260Q"


def test_destroy_returns_host_to_start(grid_k2: Simulator, driver: XenServerDriver) -> None:
    before = host_state(grid_k2)
    driver.spawn(GUEST, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)])
    assert host_state(grid_k2) != before
    driver.destroy(GUEST.uuid)
    assert host_state(grid_k2) == before
    driver.destroy(GUEST.uuid)  # already gone: not an error


def assert_spawn_fails(grid_k2: Simulator, driver: XenServerDriver, devices: list[ty.Any],
                       *needles: str) -> None:
    before = host_state(grid_k2)
    with pytest.raises(virt_exc.GuestSpawnFailed) as info:
        driver.spawn(GUEST, devices)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert GUEST.uuid in str(info.value)
    assert host_state(grid_k2) == before, "spawn left something behind"


def test_type_not_compatible_with_running_type_rolls_back(grid_k2: Simulator,
                                                          driver: XenServerDriver) -> None:
    occupy(driver, "0000:08:00.0", "GRID K280Q")
    occupy(driver, "0000:09:00.0", "GRID K280Q")
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)],
                       "VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE", "one type at a time",
                       "(GRID K240Q) while it runs type", "(GRID K280Q)", "(pGPU 0000:0")


def test_type_not_enabled_rolls_back(grid_k2: Simulator, driver: XenServerDriver) -> None:
    for address in ("0000:08:00.0", "0000:09:00.0"):
        ops.remove_enabled_type(grid_k2.db, xapi.pgpu_ref(grid_k2, address),
                                xapi.type_ref(grid_k2, "GRID K240Q"))
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)],
                       "VGPU_TYPE_NOT_ENABLED", "VGPU.create")


def test_capacity_exhausted_rolls_back_second_vgpu_too(mixed_host: Simulator) -> None:
    drv = XenServerDriver(conf=xapi.make_conf(mixed_host.url))
    try:
        devices = [xapi.make_vgpu("0000:3d:00.0", "GRID M60-8Q", None, product_id="13f2")
                   for _ in range(3)]  # two M60 pGPUs hold two M60-8Q
        assert_spawn_fails(mixed_host, drv, devices, "VM_REQUIRES_VGPU", "VM.start")
    finally:
        drv.close()


def test_handle_invalid_mid_spawn_rolls_back(grid_k2: Simulator, driver: XenServerDriver) -> None:
    grid_k2.fail_next("VGPU.create", "HANDLE_INVALID", "GPU_group", "OpaqueRef:raced")
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)],
                       "HANDLE_INVALID", "GPU_group OpaqueRef:raced does not exist")


def test_vgpus_not_sharing_a_vm_roll_back(grid_k2: Simulator, driver: XenServerDriver) -> None:
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A),
                                         xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_B)],
                       "VGPU_TYPE_NOT_COMPATIBLE", "cannot share a VM")


def test_bad_power_state_at_start_rolls_back(grid_k2: Simulator, driver: XenServerDriver) -> None:
    grid_k2.fail_next("VM.start", "VM_BAD_POWER_STATE", "OpaqueRef:vm", "halted", "running")
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)],
                       "VM_BAD_POWER_STATE", "must be halted but is running")


def test_failed_placement_check_keeps_the_started_guest(grid_k2: Simulator,
                                                        driver: XenServerDriver) -> None:
    # The first VM.get_all_records is spawn's own snapshot; the second, the
    # placement check after VM.start, fails: the guest runs, so spawn must
    # not report a failure the caller would answer by freeing its claim.
    grid_k2.fail_next("VM.get_all_records", "INTERNAL_ERROR", "db lock", after=1)
    driver.spawn(GUEST, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)])
    [guest] = driver.list_guests()
    assert (guest.uuid, guest.running, guest.mdev_uuids) == (GUEST.uuid, True, (MDEV_A,))


def test_session_invalid_mid_spawn_is_recovered(grid_k2: Simulator, driver: XenServerDriver) -> None:
    driver.get_pci_passthrough_devices()
    grid_k2.expire_sessions()
    grid_k2.fail_next("VM.start", "SESSION_INVALID", "OpaqueRef:expired")
    driver.spawn(GUEST, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)])
    assert driver.list_guests()[0].running


def test_session_lost_mid_spawn_with_rotated_password_rolls_back(grid_k2: Simulator,
                                                                 driver: XenServerDriver) -> None:
    driver.get_pci_passthrough_devices()
    before = host_state(grid_k2)
    for _ in range(6):
        grid_k2.fail_next("VM.start", "SESSION_INVALID", "OpaqueRef:expired")
    with pytest.raises(virt_exc.GuestSpawnFailed, match="valid session"):
        driver.spawn(GUEST, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)])
    assert host_state(grid_k2) == before


def test_unknown_type_or_parent_fails_before_creating_anything(grid_k2: Simulator,
                                                                driver: XenServerDriver) -> None:
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:08:00.0", "GRID K999Q", MDEV_A)],
                       "'GRID K999Q'", "GRID K240Q")
    assert_spawn_fails(grid_k2, driver, [xapi.make_vgpu("0000:77:00.0", "GRID K240Q", MDEV_A)],
                       "'0000:77:00.0'")
    assert not [m for m, _ in grid_k2.calls if m.endswith(".create")]


def test_second_spawn_of_same_guest_refused(grid_k2: Simulator, driver: XenServerDriver) -> None:
    driver.spawn(GUEST, [])
    assert_spawn_fails(grid_k2, driver, [], "already exists")


def test_placement_differing_from_claim_is_warned(grid_k2: Simulator, driver: XenServerDriver,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        driver.spawn(GUEST, [xapi.make_gpu("0000:86:00.0")])
    assert "not the claimed 0000:86:00.0" in caplog.text
    assert driver.list_guests()[0].pci_addresses == ("0000:85:00.0",)


def test_prepare_vgpu_checks_type_and_parent(driver: XenServerDriver) -> None:
    driver.prepare_vgpu(xapi.make_vgpu("0000:85:00.0", "GRID K200"))
    with pytest.raises(virt_exc.VgpuCreateFailed, match="GRID K999.*0000:85:00.0"):
        driver.prepare_vgpu(xapi.make_vgpu("0000:85:00.0", "GRID K999"))


def test_release_and_detach(grid_k2: Simulator, driver: XenServerDriver) -> None:
    device = xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)
    driver.spawn(GUEST, [device])
    with pytest.raises(virt_exc.VgpuRemoveFailed, match="running VM"):
        driver.release_vgpu(device)
    with pytest.raises(virt_exc.DeviceDetachFailed, match=MDEV_A):
        driver.detach_devices(GUEST.uuid, [device])
    assert len(grid_k2.db.tables["VGPU"]) == 1, "a refused detach leaves the vGPU attached"
    [vm] = grid_k2.db.tables["VM"]
    grid_k2.db.get("VM", vm)["power_state"] = "Halted"  # the guest shut itself down
    grid_k2.db.get("VGPU", next(iter(grid_k2.db.tables["VGPU"])))["currently_attached"] = False
    driver.detach_devices(GUEST.uuid, [device])
    assert grid_k2.db.tables["VGPU"] == {}
    driver.release_vgpu(device)  # already gone: not an error


def test_attach_is_not_supported(driver: XenServerDriver) -> None:
    driver.spawn(GUEST, [])
    with pytest.raises(virt_exc.HotPlugNotSupported, match="halted VM"):
        driver.attach_devices(GUEST.uuid, [xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)])


def test_init_host_reports_orphans(driver: XenServerDriver) -> None:
    owned = xapi.make_vgpu("0000:08:00.0", "GRID K240Q", MDEV_A)
    driver.spawn(GUEST, [owned])
    occupy(driver, "0000:08:00.0", "GRID K240Q")
    report = driver.init_host([owned])
    assert [o.mdev_uuid for o in report.orphans] == [v.mdev_uuid for v in driver.list_vgpus()
                                                     if v.mdev_uuid != MDEV_A]
    assert len(report.orphans) == 1
    assert report.recreated == [] and report.removed == []


def test_empty_url_starts_bundled_simulator_and_close_stops_it(tmp_path) -> None:
    drv = XenServerDriver(conf=xapi.make_conf("", host="m60-t4", state_dir=str(tmp_path)))
    sim = drv.simulator
    assert sim is not None and drv.describe().connection.startswith(sim.url)
    assert len(drv.get_pci_passthrough_devices()) == 4
    drv.close()
    assert drv.simulator is None and sim.db.tables["session"] == {}


def test_unreachable_host_is_typed() -> None:
    drv = XenServerDriver(conf=xapi.make_conf("http://127.0.0.1:9/"))
    with pytest.raises(virt_exc.HypervisorUnavailable, match="127.0.0.1:9"):
        drv.get_pci_passthrough_devices()
