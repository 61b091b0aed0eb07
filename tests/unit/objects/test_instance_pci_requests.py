"""InstancePCIRequest(s): Nova's objects, the JSON blob and down-levels."""

import pytest

from pci_vgpu import objects

REQ_ID = "6bd38ba2-3b5c-4a3f-9ac3-42c8a2a7c5b7"
INSTANCE = "0f3c6c5e-0d3a-4a8d-9b1e-0c3f5a1b2c3d"


def _request(**kw):
    values = dict(count=1, spec=[{"vendor_id": "10de",
                                  "vgpu_types": '["nvidia-222"]'}],
                  alias_name="t4", is_new=False, request_id=REQ_ID,
                  requester_id=None, numa_policy="socket")
    values.update(kw)
    return objects.InstancePCIRequest(**values)


def test_json_blob_round_trip():
    reqs = objects.InstancePCIRequests(instance_uuid=INSTANCE,
                                       requests=[_request(), _request(count=2)])
    back = objects.InstancePCIRequests.obj_from_db(None, INSTANCE,
                                                   reqs.to_json())
    def data(requests):
        return [r.obj_to_primitive()["pci_vgpu_object.data"]
                for r in requests]

    assert data(back.requests) == data(reqs.requests)
    assert back.obj_what_changed() == set()


def test_obj_from_db_defaults_policy_to_legacy_and_accepts_none():
    blob = '[{"count": 1, "spec": [{}], "alias_name": "a", "request_id": null}]'
    back = objects.InstancePCIRequests.obj_from_db(None, INSTANCE, blob)
    assert back.requests[0].numa_policy == "legacy"
    assert objects.InstancePCIRequests.obj_from_db(
        None, INSTANCE, None).requests == []


def test_source_and_unset_fields_read_as_none():
    assert _request().source == objects.InstancePCIRequest.FLAVOR_ALIAS
    port = objects.InstancePCIRequest(count=1, spec=[{}])
    assert port.alias_name is None
    assert port.source == objects.InstancePCIRequest.NEUTRON_PORT


def test_neutron_requests():
    port = objects.InstancePCIRequest(count=1, spec=[{}], alias_name=None)
    assert objects.InstancePCIRequests(requests=[port]).neutron_requests()
    assert not objects.InstancePCIRequests(
        requests=[port, _request()]).neutron_requests()


def test_live_migratable_needs_every_spec_true():
    assert not _request().is_live_migratable()
    assert _request(spec=[{"live_migratable": "true"}]).is_live_migratable()


@pytest.mark.parametrize("version,absent", [
    ("1.4", set()),
    ("1.3", set()),
    ("1.2", {"requester_id"}),
    ("1.1", {"requester_id", "numa_policy"}),
    ("1.0", {"requester_id", "numa_policy", "request_id"}),
])
def test_request_downgrades(version, absent):
    data = _request(numa_policy="legacy").obj_to_primitive(
        target_version=version)["pci_vgpu_object.data"]
    expected = {"count", "spec", "alias_name", "is_new", "request_id",
                "requester_id", "numa_policy"} - absent
    assert set(data) == expected
