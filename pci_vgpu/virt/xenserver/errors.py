"""XAPI failures as pci_vgpu exceptions, each with a sentence of meaning.

``XenAPI.Failure`` carries ``details = [code, param, ...]``; a bare code
such as ``VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE`` tells an operator
little.  :func:`from_failure` keeps the code and its parameters (so the
message still names the objects) and adds what the code means for vGPUs.
"""

from __future__ import annotations

import typing as ty

from pci_vgpu.virt import exception as virt_exc

#: What a XAPI error code means here; ``%s`` slots take its parameters.
_MEANINGS: dict[str, str] = {
    "VM_BAD_POWER_STATE": "VM %s must be %s but is %s; XAPI changes vGPUs only on a halted VM",
    "VGPU_TYPE_NOT_ENABLED": "vGPU type %s is not enabled on GPU group/pGPU %s",
    "VGPU_TYPE_NOT_SUPPORTED": "vGPU type %s is not supported by the pGPU",
    "VGPU_TYPE_NOT_COMPATIBLE_WITH_RUNNING_TYPE":
        "pGPU %s cannot host type %s while it runs type %s "
        "(time-sliced pGPUs run one type at a time)",
    "VGPU_TYPE_NOT_COMPATIBLE": "vGPU type %s cannot share a VM with type %s",
    "VM_REQUIRES_VGPU": "VM %s needs a pGPU of group %s with room for type %s and none has it",
    "PGPU_INSUFFICIENT_CAPACITY_FOR_VGPU": "pGPU %s has no room left for type %s",
    "HANDLE_INVALID": "the %s %s does not exist (any more)",
    "UUID_INVALID": "no %s has UUID %s",
    "SESSION_INVALID": "the XAPI session %s is no longer valid",
    "SESSION_AUTHENTICATION_FAILED": "user %s was refused: %s",
    "DEVICE_ALREADY_EXISTS": "the VM already has a vGPU in slot %s",
    "MESSAGE_METHOD_UNKNOWN": "XAPI does not implement %s",
    "MESSAGE_PARAMETER_COUNT_MISMATCH": "%s expects %s parameters, got %s",
    "OPERATION_NOT_ALLOWED": "%s",
}


class XapiFailure(virt_exc.VirtDriverError):
    """A XAPI call answered ``Failure``."""

    msg_fmt = "XAPI call %(method)s failed with %(code)s: %(meaning)s"

    @property
    def code(self) -> str:
        return str(self.kwargs.get("code", ""))

    @property
    def params(self) -> list[str]:
        return list(self.kwargs.get("params", []))


class XenServerAuthFailed(virt_exc.HypervisorUnavailable):
    msg_fmt = ("Cannot reach the hypervisor at %(connection)s: user %(user)s "
               "was refused (check [xenserver] connection_username/connection_password)")


class XenServerSessionLost(virt_exc.HypervisorUnavailable):
    msg_fmt = "Cannot reach the hypervisor at %(connection)s: %(reason)s"


class XenServerTimeout(virt_exc.HypervisorUnavailable):
    msg_fmt = ("XAPI at %(connection)s %(what)s within %(seconds)s s; raise [xenserver] "
               "%(option)s if the host is just slow, or check [xenserver] connection_url")


class XapiAnswerInvalid(virt_exc.VirtDriverError):
    msg_fmt = ("XAPI at %(connection)s answered %(method)s with something that is not "
               "XML-RPC (%(reason)s); is [xenserver] connection_url a XAPI endpoint?")


def meaning(code: str, params: ty.Sequence[str]) -> str:
    """One sentence saying what ``code`` with ``params`` means."""
    template = _MEANINGS.get(code)
    if template is None:
        return "parameters %s" % list(params)
    slots = template.count("%s")
    padded = list(params) + ["?"] * max(0, slots - len(params))
    return template % tuple(padded[:slots])


def from_failure(method: str, details: ty.Sequence[object]) -> XapiFailure:
    """Build the exception for ``XenAPI.Failure(details)`` from ``method``."""
    items = [str(d) for d in details] or ["UNKNOWN"]
    code, params = items[0], items[1:]
    return XapiFailure(method=method, code=code, params=params, meaning=meaning(code, params))
