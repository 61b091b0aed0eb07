"""The patched Nova's own libvirt mdev code against a real libvirtd.

Run by the Nova check venv's python (``tools/check-nova-series
--prepare-only``), not the project's: it imports the patched tree at
``$NOVA_CHECK_DIR/verify/nova-34.0.0``.  It builds Nova's real
``LibvirtDriver`` on ``qemu:///system`` with ``[devices]`` naming the mtty
parent the way Nova's own CI does, and drives the calls its driver makes
for a vGPU's mdev: create (``_create_new_mediated_device`` ->
``_create_mdev``: create, define, autostart), lookup by UUID
(``_get_mediated_device_information`` with the UUID-only name, the series'
``_mdev_nodedevs``), start after a stop (``_start_inactive_mediated_devices``)
and delete (the series' ``_delete_mdev``).  Each step's outcome is printed
as one JSON object for the test to check; nothing is asserted here.

    nova_mdev_harness.py MDEV_TYPE PARENT_NODE_NAME
"""

import json
import sys
import time
import traceback


def main(mdev_type, parent):
    import libvirt

    import nova.conf
    from nova.virt import fake
    from nova.virt.libvirt import driver as libvirt_driver
    from nova.virt.libvirt import utils as libvirt_utils

    conf = nova.conf.CONF
    conf([], project="nova", default_config_files=[])
    conf.set_override("enabled_mdev_types", [mdev_type], group="devices")
    nova.conf.devices.register_dynamic_opts(conf)
    conf.set_override("device_addresses", [parent], group="mdev_%s" % mdev_type)
    drv = libvirt_driver.LibvirtDriver(fake.FakeVirtAPI(), False)
    result = {"uri": drv._uri(), "steps": []}

    def step(name, func):
        start = time.monotonic()
        entry = {"step": name}
        try:
            entry["value"] = func()
        except Exception as exc:  # reported, the test decides
            entry["error"] = "%s: %s" % (type(exc).__name__, exc)
            entry["trace"] = traceback.format_exc(limit=4)
        entry["seconds"] = round(time.monotonic() - start, 3)
        result["steps"].append(entry)
        return entry.get("value")

    step("capable", lambda: [
        {"dev_id": d["dev_id"], "types": {t: c["availableInstances"]
                                          for t, c in d["types"].items()}}
        for d in drv._get_mdev_capable_devices()])
    mdev_uuid = step("create", lambda: drv._create_new_mediated_device(parent))
    if mdev_uuid:
        step("names", lambda: drv._host.list_mediated_devices())
        step("lookup_by_uuid", lambda: drv._get_mediated_device_information(
            libvirt_utils.mdev_uuid2name(mdev_uuid)))
        step("not_assigned", lambda: sorted(drv._get_existing_mdevs_not_assigned(parent)))

        def persistent():
            dev = drv._mdev_nodedevs()[mdev_uuid]
            return {"name": dev.name(), "active": dev.isActive(),
                    "persistent": dev.isPersistent(), "autostart": dev.autostart()}
        step("nodedev", persistent)

        def stop_and_start():
            drv._mdev_nodedevs()[mdev_uuid].destroy()
            drv._start_inactive_mediated_devices()
            return drv._mdev_nodedevs()[mdev_uuid].isActive()
        step("start_inactive", stop_and_start)
        step("delete", lambda: drv._delete_mdev(drv._mdev_nodedevs()[mdev_uuid]))

        def gone():
            # libvirtd forgets the node device when udev reports the removal.
            deadline = time.monotonic() + 30
            while mdev_uuid in drv._mdev_nodedevs():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
            return True
        step("gone", gone)
        step("left", lambda: sorted(drv._mdev_nodedevs()))
    result["mdev_uuid"] = mdev_uuid
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
