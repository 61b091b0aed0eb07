"""The capacity model against the real drivers: seeded random walks.

For each sample driver, a seeded sequence of creates and removes runs on the
real kernel while the project's model (:func:`pci_vgpu.mdev_parents.gpu_state`
built once from the empty parent, then kept with
:func:`pci_vgpu.capacity.consume_instance` / ``release_instance`` as the
tracker does) predicts each type's free instances.  After every step the
prediction must equal the kernel's ``available_instances``; a create the
model refuses is tried on the kernel anyway and must be refused there too,
and one the model accepts must succeed.

=======  ============================================  =====================
driver   rule                                          model
=======  ============================================  =====================
mbochs   ``count`` MB video memory shared by 4/16/64   budget, sizes from the
         MB types (count=100: 64 does not divide it)   type descriptions
mdpy     ``count`` instances per parent, any type      budget, 1/max rule
mtty     24 ports; mtty-1 takes 1, mtty-2 takes 2      budget, 1/max rule
=======  ============================================  =====================
"""

from __future__ import annotations

import json
import os
import random
import uuid

import pytest

from pci_vgpu import capacity
from pci_vgpu import mdev_parents
from pci_vgpu import pool_errors
from pci_vgpu.virt import exception
from tests.kernel.conftest import load

pytestmark = pytest.mark.kernel

STEPS = 300
#: driver -> (module parameters, seed)
WALKS = {"mbochs": ({"count": 100}, 1301), "mdpy": ({"count": 6}, 1302),
         "mtty": ({}, 1303)}


def kernel_available(root, driver, types):
    """Only the counts: the walk reads them after every step."""
    return {t: root.read_int(root.mdev_parent(driver, "mdev_supported_types", t,
                                              "available_instances")) for t in types}


def record(driver, stats):
    out = os.environ.get("PCI_VGPU_KERNEL_LAB_OUT")
    if not out:
        return
    path = os.path.join(out, "walks.json")
    known = {}
    if os.path.exists(path):
        with open(path) as handle:
            known = json.load(handle)
    known[driver] = stats
    with open(path, "w") as handle:
        json.dump(known, handle, indent=1, sort_keys=True)


@pytest.mark.parametrize("driver", sorted(WALKS))
def test_model_matches_kernel_on_a_random_walk(root, backend, driver):
    params, seed = WALKS[driver]
    load(driver, **params)
    try:
        stats = walk(root, backend, driver, random.Random(seed))
    finally:
        for found in backend.list():
            backend.remove(found.mdev_uuid, found.parent_addr)
        load(driver)
    print("walk %s: %s" % (driver, stats))
    record(driver, stats)
    assert stats["refused"] > 0 and stats["created"] > 0 and stats["removed"] > 0


def walk(root, backend, driver, rng):
    parent = mdev_parents.read_parent(root, driver)
    assert parent.mdevs == {}, "the walk starts on an empty parent"
    state = mdev_parents.gpu_state(parent, mdev_parents.sharing_of(parent))
    types = sorted(parent.types)
    alive: list[tuple[str, str]] = []
    stats = {"steps": STEPS, "created": 0, "refused": 0, "removed": 0}
    for step in range(STEPS):
        if alive and rng.random() < 0.4:
            mdev_uuid, mdev_type = alive.pop(rng.randrange(len(alive)))
            backend.remove(mdev_uuid, driver)
            capacity.release_instance(state, mdev_type, destroy=True)
            stats["removed"] += 1
        else:
            mdev_type = rng.choice(types)
            mdev_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            try:
                capacity.consume_instance(state, mdev_type)
            except pool_errors.VgpuCapacityExceeded:
                with pytest.raises(exception.MdevNoCapacity):
                    backend.create(driver, mdev_type, mdev_uuid)
                stats["refused"] += 1
            else:
                backend.create(driver, mdev_type, mdev_uuid)
                alive.append((mdev_uuid, mdev_type))
                stats["created"] += 1
        predicted = {t: capacity.creatable(state, t) for t in types}
        assert predicted == kernel_available(root, driver, types), "step %d" % step
    return stats
