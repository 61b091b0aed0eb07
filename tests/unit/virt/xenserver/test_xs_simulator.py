"""The XAPI simulator, driven through the real ``XenAPI.Session`` client."""

from __future__ import annotations

import json
import subprocess
import sys
import typing as ty
import urllib.request
import xmlrpc.client

import pytest
import XenAPI

from pci_vgpu.virt.xenserver.simulator import Simulator
from pci_vgpu.virt.xenserver.simulator import hostdesc
from tests.fixtures.xapi import PASSWORD
from tests.fixtures.xapi import grid_k2  # noqa: F401  (pytest fixture)
from tests.fixtures.xapi import mixed_host  # noqa: F401  (pytest fixture)
from tests.fixtures.xapi import pgpu_ref
from tests.fixtures.xapi import type_ref


def login(sim: Simulator) -> ty.Any:
    session = XenAPI.Session(sim.url)
    session.xenapi.login_with_password("root", PASSWORD, "2.21", "tests")
    return session


def raw_proxy(sim: Simulator) -> ty.Any:
    """A bare XML-RPC proxy, to see XAPI's wire format unparsed."""
    return xmlrpc.client.ServerProxy(sim.url, allow_none=True)


def failure(fn: ty.Callable[..., object], *args: object) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return list(info.value.details)


def new_vm(x: ty.Any, name: str = "vm") -> str:
    return str(x.VM.create({"name_label": name, "other_config": {}}))


def add_vgpu(x: ty.Any, sim: Simulator, vm: str, group: str, model: str, device: str = "0") -> str:
    return str(x.VGPU.create(vm, group, device, {}, type_ref(sim, model)))


def group_of(sim: Simulator, address: str) -> str:
    return str(sim.db.get("PGPU", pgpu_ref(sim, address))["GPU_group"])


def test_wire_format_int64_as_strings_and_success_struct(grid_k2: Simulator) -> None:
    raw = raw_proxy(grid_k2)
    login_reply = raw.session.login_with_password("root", PASSWORD, "2.21", "t")
    assert login_reply["Status"] == "Success"
    assert login_reply["Value"].startswith("OpaqueRef:")
    pgpu = pgpu_ref(grid_k2, "0000:08:00.0")
    record = raw.PGPU.get_record(login_reply["Value"], pgpu)["Value"]
    assert set(record["supported_VGPU_max_capacities"].values()) == {"1", "2", "4", "8"}
    fb = raw.VGPU_type.get_framebuffer_size(login_reply["Value"], type_ref(grid_k2, "GRID K280Q"))
    assert fb == {"Status": "Success", "Value": str(4096 * 1024 * 1024)}


def test_failure_struct_and_unknown_method(grid_k2: Simulator) -> None:
    raw = raw_proxy(grid_k2)
    session = raw.session.login_with_password("root", PASSWORD, "2.21", "t")["Value"]
    assert raw.VM.teleport(session, "x") == {
        "Status": "Failure", "ErrorDescription": ["MESSAGE_METHOD_UNKNOWN", "VM.teleport"]}
    assert raw.PGPU.get_nonsense_field(session, pgpu_ref(grid_k2, "0000:08:00.0"))[
        "ErrorDescription"][0] == "MESSAGE_METHOD_UNKNOWN"
    assert raw.Pool.get_all(session)["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "Pool.get_all"]


def test_parameter_count_and_handle_invalid(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    assert failure(x.VM.start) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "0"]
    assert failure(x.PGPU.get_record, "OpaqueRef:gone") == ["HANDLE_INVALID", "PGPU", "OpaqueRef:gone"]
    assert failure(x.VM.get_by_uuid, "nope") == ["UUID_INVALID", "VM", "nope"]


def test_bad_password_and_unknown_session(grid_k2: Simulator) -> None:
    session = XenAPI.Session(grid_k2.url)
    details = failure(session.xenapi.login_with_password, "root", "wrong", "2.21", "t")
    assert details[0] == "SESSION_AUTHENTICATION_FAILED"
    raw = raw_proxy(grid_k2)
    assert raw.VM.get_all("OpaqueRef:forged")["ErrorDescription"] == [
        "SESSION_INVALID", "OpaqueRef:forged"]


def test_client_relogs_in_after_expiry_and_logout_ends_session(grid_k2: Simulator) -> None:
    session = login(grid_k2)
    first = session.handle
    grid_k2.expire_sessions()
    assert session.xenapi.VM.get_all() == []
    assert session.handle != first
    assert list(grid_k2.db.tables["session"]) == [session.handle]
    session.xenapi.session.logout()
    assert grid_k2.db.tables["session"] == {}


def test_depth_first_packs_the_fullest_pgpu(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    group = group_of(grid_k2, "0000:08:00.0")
    placed = []
    for n in range(3):
        vm = new_vm(x, "pack%d" % n)
        vgpu = add_vgpu(x, grid_k2, vm, group, "GRID K240Q")
        x.VM.start(vm, False, False)
        placed.append(x.PCI.get_pci_id(x.PGPU.get_PCI(x.VGPU.get_resident_on(vgpu))))
    assert placed[1:] == [placed[0]] * 2


def test_breadth_first_spreads(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    group = group_of(grid_k2, "0000:85:00.0")
    placed = []
    for n in range(4):
        vm = new_vm(x, "spread%d" % n)
        vgpu = add_vgpu(x, grid_k2, vm, group, "GRID K240Q")
        x.VM.start(vm, False, False)
        placed.append(x.PCI.get_pci_id(x.PGPU.get_PCI(x.VGPU.get_resident_on(vgpu))))
    assert placed == ["0000:85:00.0", "0000:86:00.0", "0000:85:00.0", "0000:86:00.0"]


def test_remaining_capacity_drops_as_vgpus_become_resident(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    pgpu, k240 = pgpu_ref(grid_k2, "0000:08:00.0"), type_ref(grid_k2, "GRID K240Q")
    group = group_of(grid_k2, "0000:08:00.0")
    assert x.PGPU.get_remaining_capacity(pgpu, k240) == "4"
    assert x.GPU_group.get_remaining_capacity(group, k240) == "8"
    vm = new_vm(x)
    add_vgpu(x, grid_k2, vm, group, "GRID K240Q")
    assert x.PGPU.get_remaining_capacity(pgpu, k240) == "4", "a halted VM's VGPU holds nothing"
    x.VM.start(vm, False, False)
    assert x.PGPU.get_remaining_capacity(pgpu, k240) == "3"
    assert x.PGPU.get_remaining_capacity(pgpu, type_ref(grid_k2, "GRID K260Q")) == "0"
    assert x.PGPU.get_remaining_capacity(pgpu, type_ref(grid_k2, "passthrough")) == "0"
    assert len(x.PGPU.get_resident_VGPUs(pgpu)) == 1
    x.VM.hard_shutdown(vm)
    assert x.PGPU.get_remaining_capacity(pgpu, k240) == "4"


def test_type_lock_across_vms(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    group = group_of(grid_k2, "0000:08:00.0")
    for n in range(2):  # K280Q fills a pGPU: one on each pGPU of the group
        vm = new_vm(x, "k260q-%d" % n)
        add_vgpu(x, grid_k2, vm, group, "GRID K280Q")
        x.VM.start(vm, False, False)
    vm = new_vm(x, "k240q")
    add_vgpu(x, grid_k2, vm, group, "GRID K240Q")
    details = failure(x.VM.start, vm, False, False)
    assert details[0] == "VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE"
    assert details[2:] == [type_ref(grid_k2, "GRID K240Q"), type_ref(grid_k2, "GRID K280Q")]
    assert x.VM.get_power_state(vm) == "Halted"


def test_capacity_exhaustion(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    group = group_of(grid_k2, "0000:85:00.0")
    for n in range(4):
        vm = new_vm(x, "k260q-%d" % n)
        add_vgpu(x, grid_k2, vm, group, "GRID K260Q")
        x.VM.start(vm, False, False)
    vm = new_vm(x, "one-too-many")
    vgpu = add_vgpu(x, grid_k2, vm, group, "GRID K260Q")
    assert failure(x.VM.start, vm, False, False) == [
        "VM_REQUIRES_VGPU", vm, group, type_ref(grid_k2, "GRID K260Q")]
    assert x.VGPU.get_resident_on(vgpu) == "OpaqueRef:NULL"


def test_vgpu_create_refused_on_running_vm(grid_k2: Simulator) -> None:
    x = login(grid_k2).xenapi
    group = group_of(grid_k2, "0000:08:00.0")
    vm = new_vm(x)
    add_vgpu(x, grid_k2, vm, group, "GRID K240Q")
    x.VM.start(vm, False, False)
    assert failure(add_vgpu, x, grid_k2, vm, group, "GRID K240Q", "1") == [
        "VM_BAD_POWER_STATE", vm, "halted", "running"]
    assert failure(x.VM.destroy, vm) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]


def test_type_not_enabled_and_multi_vgpu_compatibility(mixed_host: Simulator) -> None:
    x = login(mixed_host).xenapi
    t4_group = group_of(mixed_host, "0000:af:00.0")
    t4_8q = type_ref(mixed_host, "GRID T4-8Q")
    for address in ("0000:af:00.0", "0000:d8:00.0"):
        x.PGPU.remove_enabled_VGPU_types(pgpu_ref(mixed_host, address), t4_8q)
    vm = new_vm(x)
    assert failure(add_vgpu, x, mixed_host, vm, t4_group, "GRID T4-8Q") == [
        "VGPU_TYPE_NOT_ENABLED", t4_8q, t4_group]
    x.PGPU.add_enabled_VGPU_types(pgpu_ref(mixed_host, "0000:af:00.0"), t4_8q)
    add_vgpu(x, mixed_host, vm, t4_group, "GRID T4-8Q", "0")
    add_vgpu(x, mixed_host, vm, t4_group, "GRID T4-8Q", "1")
    assert failure(add_vgpu, x, mixed_host, vm, t4_group, "GRID T4-8Q", "1") == [
        "DEVICE_ALREADY_EXISTS", "1"]
    assert failure(add_vgpu, x, mixed_host, vm, t4_group, "GRID T4-1Q", "2")[0] == \
        "VGPU_TYPE_NOT_COMPATIBLE"
    x.VM.start(vm, False, False)
    assert len(x.PGPU.get_resident_VGPUs(pgpu_ref(mixed_host, "0000:af:00.0"))) == 2


def test_failed_start_places_nothing(mixed_host: Simulator) -> None:
    x = login(mixed_host).xenapi
    m60 = group_of(mixed_host, "0000:3d:00.0")
    vm = new_vm(x)
    first = add_vgpu(x, mixed_host, vm, m60, "GRID M60-8Q", "0")
    add_vgpu(x, mixed_host, vm, m60, "GRID M60-8Q", "1")
    add_vgpu(x, mixed_host, vm, m60, "GRID M60-8Q", "2")  # only two M60 pGPUs
    assert failure(x.VM.start, vm, False, False)[0] == "VM_REQUIRES_VGPU"
    assert x.VGPU.get_resident_on(first) == "OpaqueRef:NULL"
    assert x.VM.get_power_state(vm) == "Halted"


def test_refs_are_reproducible() -> None:
    with Simulator("m60-t4", password="p") as one, Simulator("m60-t4", password="p") as two:
        assert list(one.db.tables["PGPU"]) == list(two.db.tables["PGPU"])


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["gpu_groups"]["k2-pack"].update(allocation_algorithm="random"), "allocation_algorithm"),
    (lambda d: d["pgpus"][0].update(gpu_group="nope"), "unknown GPU group 'nope'"),
    (lambda d: d["pgpus"][0]["max_capacities"].update(K999=1), "'K999'"),
    (lambda d: d["vgpu_types"]["K200"].update(implementation="magic"), "implementation"),
])
def test_bad_host_description_names_the_problem(tmp_path: ty.Any, mutate: ty.Any, needle: str) -> None:
    desc = hostdesc.load("grid-k2")
    mutate(desc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(desc))
    with pytest.raises(hostdesc.HostDescriptionInvalid) as info:
        Simulator(str(path))
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_host_lists_shipped_ones() -> None:
    with pytest.raises(hostdesc.HostDescriptionInvalid, match="grid-k2, m60-t4"):
        Simulator("no-such-host")


def test_module_entry_prints_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pci_vgpu.virt.xenserver.simulator", "--host", "m60-t4",
         "--port", "0", "--password", "pw"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        session = XenAPI.Session(url)
        session.xenapi.login_with_password("root", "pw", "2.21", "t")
        assert len(session.xenapi.PGPU.get_all()) == 4
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url)  # GET is not XML-RPC
    finally:
        proc.terminate()
        proc.wait(timeout=10)
