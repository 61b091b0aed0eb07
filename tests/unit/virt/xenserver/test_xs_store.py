"""The simulator keeps its XAPI objects in a store: two simulators on one
store are two processes on one XenServer host."""

from __future__ import annotations

import xmlrpc.client

import XenAPI

from pci_vgpu.virt.xenserver.simulator import Simulator
from pci_vgpu.virt.xenserver.simulator import hostdesc
from pci_vgpu.virt.xenserver.simulator import store as store_mod
from tests.fixtures import xapi


def _session(sim: Simulator) -> XenAPI.Session:
    session = XenAPI.Session(sim.url)
    session.xenapi.login_with_password("root", xapi.PASSWORD, "2.21", "test")
    return session


def test_objects_made_through_one_simulator_are_served_by_the_other(tmp_path):
    with Simulator("grid-k2", password=xapi.PASSWORD, state_dir=str(tmp_path)) as one, \
            Simulator("grid-k2", password=xapi.PASSWORD, state_dir=str(tmp_path)) as two:
        first, second = _session(one), _session(two)
        vm = first.xenapi.VM.create({"name_label": "vm1"})
        group = next(iter(first.xenapi.GPU_group.get_all()))
        vtype = xapi.type_ref(one, "GRID K280Q")
        first.xenapi.VGPU.create(vm, group, "0", {}, vtype)
        first.xenapi.VM.start(vm, False, False)
        assert second.xenapi.VM.get_power_state(vm) == "Running"
        [vgpu] = second.xenapi.VM.get_VGPUs(vm)
        pgpu = second.xenapi.VGPU.get_resident_on(vgpu)
        # The K280Q fills its pGPU: the other process's XAPI counts it.
        assert second.xenapi.PGPU.get_remaining_capacity(pgpu, vtype) == "0"
        second.xenapi.VM.hard_shutdown(vm)
        second.xenapi.VM.destroy(vm)
        assert first.xenapi.VM.get_all() == []


def test_the_store_is_xapi_records_in_xml_rpc_without_sessions(tmp_path):
    with Simulator("m60-t4", password=xapi.PASSWORD, state_dir=str(tmp_path)) as sim:
        session = _session(sim)
        session.xenapi.VM.create({"name_label": "kept"})
        store = store_mod.SimulatorStore(str(tmp_path), str(hostdesc.resolve("m60-t4")))
        path = next(tmp_path.glob("xapi-simulator/m60-t4-*/state.db"))
        assert store.path == str(path)
        (tables,), _ = xmlrpc.client.loads(path.read_text())
        assert "session" not in tables
        assert [r["name_label"] for r in tables["VM"].values()] == ["kept"]


def test_a_later_simulator_starts_from_what_was_saved(tmp_path):
    with Simulator("grid-k2", password=xapi.PASSWORD, state_dir=str(tmp_path)) as sim:
        _session(sim).xenapi.VM.create({"name_label": "survivor"})
    with Simulator("grid-k2", password=xapi.PASSWORD, state_dir=str(tmp_path)) as later:
        session = _session(later)
        names = [session.xenapi.VM.get_name_label(v) for v in session.xenapi.VM.get_all()]
        assert names == ["survivor"]
        new = session.xenapi.VM.create({"name_label": "another"})
        assert new not in sim.db.tables["VM"]  # refs are drawn at random once loaded
