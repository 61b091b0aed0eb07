"""The XML-RPC front of the simulator: XAPI's wire format and sessions.

XAPI answers every call with a struct, ``{'Status': 'Success', 'Value':
v}`` or ``{'Status': 'Failure', 'ErrorDescription': [code, ...]}``; the
first parameter of every call but ``session.login_with_password`` is the
session ref, checked before anything else (``SESSION_INVALID``).  A call
the simulator does not implement answers ``MESSAGE_METHOD_UNKNOWN`` and a
wrong number of arguments ``MESSAGE_PARAMETER_COUNT_MISMATCH``: nothing is
accepted silently.

:class:`Simulator` serves one host description on ``127.0.0.1`` from a
daemon thread; tests reach its state through :attr:`Simulator.db` and its
hooks (:meth:`Simulator.expire_sessions`, :attr:`Simulator.calls`).
"""

from __future__ import annotations

import contextlib
import inspect
import socketserver
import threading
import typing as ty
import xmlrpc.server

from pci_vgpu.virt.xenserver.simulator import hostdesc
from pci_vgpu.virt.xenserver.simulator import ops
from pci_vgpu.virt.xenserver.simulator.model import CLASSES
from pci_vgpu.virt.xenserver.simulator.model import Database
from pci_vgpu.virt.xenserver.simulator.model import XapiError
from pci_vgpu.virt.xenserver.simulator.model import full_record
from pci_vgpu.virt.xenserver.simulator.model import to_wire
from pci_vgpu.virt.xenserver.simulator.store import SimulatorStore

Handler = ty.Callable[..., object]

#: Class-specific messages: "Class.message" -> function(db, *args).
_MESSAGES: dict[str, Handler] = {
    "PGPU.get_remaining_capacity": ops.pgpu_remaining_capacity,
    "PGPU.set_enabled_VGPU_types": ops.set_enabled_types,
    "PGPU.add_enabled_VGPU_types": ops.add_enabled_type,
    "PGPU.remove_enabled_VGPU_types": ops.remove_enabled_type,
    "GPU_group.get_remaining_capacity": ops.group_remaining_capacity,
    "GPU_group.set_allocation_algorithm": ops.set_allocation_algorithm,
    "VM.create": ops.vm_create,
    "VM.destroy": ops.vm_destroy,
    "VM.start": ops.vm_start,
    "VM.hard_shutdown": ops.vm_shutdown,
    "VM.clean_shutdown": ops.vm_shutdown,
    "VGPU.create": ops.vgpu_create,
    "VGPU.destroy": ops.vgpu_destroy,
}


#: Messages that change no object (everything else in _MESSAGES does).
_READ_ONLY = frozenset(("PGPU.get_remaining_capacity", "GPU_group.get_remaining_capacity"))


def _success(value: object) -> dict[str, object]:
    return {"Status": "Success", "Value": to_wire(value)}


def _failure(exc: XapiError) -> dict[str, object]:
    return {"Status": "Failure", "ErrorDescription": exc.description}


class _Api:
    """Resolves and runs one XAPI call against the database."""

    def __init__(self, db: Database, username: str, password: str,
                 store: SimulatorStore | None = None) -> None:
        self.db = db
        self.username = username
        self.password = password
        self.store = store
        self._stamp = store.stamp() if store is not None else ()
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        #: Failures to answer instead of running the call, by method.
        self.faults: dict[str, list[XapiError | None]] = {}

    def _dispatch(self, method: str, params: tuple[object, ...]) -> dict[str, object]:
        with self._host(), self.db.lock:
            try:
                answer = _success(self._call(method, params))
            except XapiError as exc:
                return _failure(exc)
            if self.store is not None and method in _MESSAGES and method not in _READ_ONLY:
                self.store.save(self.db)
                self._stamp = self.store.stamp()
            return answer

    @contextlib.contextmanager
    def _host(self) -> ty.Iterator[None]:
        """Hold the stored host (if any), read again when another process saved it."""
        if self.store is None:
            yield
            return
        with self.store.lock():
            if self.store.stamp() != self._stamp:
                with self.db.lock:
                    self.store.load(self.db)
                    self.db.reseed_randomly()
                self._stamp = self.store.stamp()
            yield

    def _call(self, method: str, params: tuple[object, ...]) -> object:
        if method == "session.login_with_password":
            return self._login(*self._arity(method, params, 2, 4))
        if not params or params[0] not in self.db.tables["session"]:
            raise XapiError("SESSION_INVALID", params[0] if params else "")
        args = params[1:]
        if method == "session.logout":
            self.db.delete("session", str(params[0]))
            return ""
        handler = self._resolve(method)
        self.calls.append((method, tuple(args)))
        sig = inspect.signature(handler)
        required = sum(1 for p in list(sig.parameters.values())[1:] if p.default is p.empty)
        self._arity(method, args, required, len(sig.parameters) - 1)
        fault = self.faults[method].pop(0) if self.faults.get(method) else None
        if fault is not None:
            raise fault
        return handler(self.db, *args)

    @staticmethod
    def _arity(method: str, args: tuple[object, ...], low: int, high: int) -> tuple[object, ...]:
        if not low <= len(args) <= high:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, high, len(args))
        return args

    def _login(self, user: object, password: object, *_version: object) -> str:
        if user != self.username or password != self.password:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", user,
                            "Authentication failure")
        return self.db.insert("session", {"this_user": str(user)})

    def _resolve(self, method: str) -> Handler:
        cls, _, message = method.partition(".")
        if method in _MESSAGES:
            return _MESSAGES[method]
        if cls not in CLASSES or cls == "session":
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        generic = self._generic(cls, message)
        if generic is None:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        return generic

    def _generic(self, cls: str, message: str) -> Handler | None:
        """get_all, get_all_records, get_record, get_by_uuid, get_<field>."""
        if message == "get_all":
            return lambda db: db.refs(cls)
        if message == "get_all_records":
            return lambda db: {r: full_record(db, cls, r) for r in db.refs(cls)}
        if message == "get_record":
            return lambda db, ref: full_record(db, cls, str(ref))
        if message == "get_by_uuid":
            return lambda db, uuid: db.by_uuid(cls, uuid)
        if message.startswith("get_"):
            field = message[4:]
            return lambda db, ref: self._field(cls, str(ref), field, message)
        return None

    def _field(self, cls: str, ref: str, field: str, message: str) -> object:
        record = full_record(self.db, cls, ref)
        if field not in record:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", "%s.%s" % (cls, message))
        return record[field]


class _Server(socketserver.ThreadingMixIn, xmlrpc.server.SimpleXMLRPCServer):
    daemon_threads = True


class Simulator:
    """A simulated XAPI host on ``127.0.0.1``; a context manager."""

    def __init__(self, host: str = "grid-k2", username: str = "root",
                 password: str = "", port: int = 0, seed: int = 0,
                 state_dir: str | None = None) -> None:
        """``state_dir``: keep the host's objects there between processes
        (see :mod:`.store`); None keeps them in this process only.

        :raises: HostDescriptionInvalid; StateDirUnusable.
        """
        self.description = hostdesc.load(host)
        self.db = Database(seed)
        store = (SimulatorStore(state_dir, str(hostdesc.resolve(host)))
                 if state_dir is not None else None)
        self._populate(store)
        self.api = _Api(self.db, username, password, store)
        self._server = _Server(("127.0.0.1", port), logRequests=False, allow_none=True)
        self._server.register_instance(self.api)
        self._thread: threading.Thread | None = None

    def _populate(self, store: SimulatorStore | None) -> None:
        """Build the host from its description, or read it back from ``store``."""
        if store is None:
            hostdesc.populate(self.db, self.description)
            return
        with store.lock():
            if store.exists():
                store.load(self.db)
                self.db.reseed_randomly()
            else:
                hostdesc.populate(self.db, self.description)
                store.save(self.db)

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return "http://127.0.0.1:%d/" % port

    @property
    def calls(self) -> list[tuple[str, tuple[object, ...]]]:
        """Every authenticated call received, in order (session ref dropped)."""
        return self.api.calls

    def start(self) -> Simulator:
        """Serve from a daemon thread; return self."""
        # A short poll interval: stop() waits for the loop to notice, and
        # every pci-vgpu command on the bundled simulator ends with a stop.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="xapi-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def expire_sessions(self) -> None:
        """Forget every session, as a XAPI restart or a timeout would."""
        with self.db.lock:
            self.db.tables["session"].clear()

    def fail_next(self, method: str, code: str, *params: object, after: int = 0) -> None:
        """Answer the next ``method`` call (after ``after`` that succeed)
        with a Failure, running nothing.

        For faults a single host cannot be driven into on demand (a handle
        destroyed by another client between two calls, a XAPI restart).
        """
        self.api.faults.setdefault(method, []).extend(
            [None] * after + [XapiError(code, *params)])

    def set_password(self, password: str) -> None:
        """Change the accepted password (existing sessions stay valid)."""
        self.api.password = password

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
