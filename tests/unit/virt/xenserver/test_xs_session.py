"""XapiSession: login, error mapping, re-login, logout, secrets."""

from __future__ import annotations

import concurrent.futures
import http.server
import logging
import socket
import threading

import pytest

from pci_vgpu.virt import exception as virt_exc
from pci_vgpu.virt.xenserver import errors
from pci_vgpu.virt.xenserver.session import Timeouts
from pci_vgpu.virt.xenserver.session import XapiSession
from pci_vgpu.virt.xenserver.simulator import Simulator
from tests.fixtures.xapi import PASSWORD
from tests.fixtures.xapi import grid_k2  # noqa: F401  (pytest fixture)


def test_lazy_login_then_calls(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    assert grid_k2.db.tables["session"] == {}
    assert len(session.call("PGPU.get_all")) == 4
    assert len(grid_k2.db.tables["session"]) == 1


def test_bad_password_is_typed_and_never_shows_the_password(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", "hunter2")
    with pytest.raises(errors.XenServerAuthFailed) as info:
        session.call("PGPU.get_all")
    assert isinstance(info.value, virt_exc.HypervisorUnavailable)
    assert "root" in str(info.value) and grid_k2.url in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(session)


def test_failure_becomes_xapi_failure_with_meaning(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    with pytest.raises(errors.XapiFailure) as info:
        session.call("VM.start", "OpaqueRef:gone", False, False)
    assert info.value.code == "HANDLE_INVALID"
    assert info.value.params == ["VM", "OpaqueRef:gone"]
    assert str(info.value) == ("XAPI call VM.start failed with HANDLE_INVALID: "
                               "the VM OpaqueRef:gone does not exist (any more)")


def test_session_expiry_relogs_in_transparently(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    session.call("VM.get_all")
    old = set(grid_k2.db.tables["session"])
    grid_k2.expire_sessions()
    assert session.call("VM.get_all") == []
    assert set(grid_k2.db.tables["session"]).isdisjoint(old)
    assert len(grid_k2.db.tables["session"]) == 1


def test_expiry_with_changed_password_is_auth_failure(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    session.call("VM.get_all")
    grid_k2.expire_sessions()
    grid_k2.set_password("rotated")
    with pytest.raises(errors.XenServerAuthFailed):
        session.call("VM.get_all")


def test_session_invalid_on_every_retry_gives_up_typed(grid_k2: Simulator,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    for _ in range(6):  # XenAPI retries 3 times, then the wrapper once more
        grid_k2.fail_next("VM.get_all", "SESSION_INVALID", "OpaqueRef:x")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(errors.XenServerSessionLost, match="valid session"):
            session.call("VM.get_all")
    assert "logging in again" in caplog.text
    assert PASSWORD not in caplog.text


def test_one_stubborn_session_invalid_is_recovered(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    for _ in range(3):
        grid_k2.fail_next("VM.get_all", "SESSION_INVALID", "OpaqueRef:x")
    assert session.call("VM.get_all") == []


def test_unreachable_endpoint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = XapiSession("http://127.0.0.1:%d/" % port, "root", "pw")
    with pytest.raises(errors.XenServerSessionLost, match="127.0.0.1:%d" % port):
        session.call("VM.get_all")


def test_close_logs_out_and_is_idempotent(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    session.call("VM.get_all")
    session.close()
    assert grid_k2.db.tables["session"] == {}
    session.close()
    assert session.call("PGPU.get_all"), "a closed session logs in again on use"


def test_close_after_expiry_does_not_raise(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    session.call("VM.get_all")
    grid_k2.expire_sessions()
    session.close()
    assert grid_k2.db.tables["session"] == {}


def test_calls_from_several_threads_share_one_session(grid_k2: Simulator) -> None:
    session = XapiSession(grid_k2.url, "root", PASSWORD)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: len(session.call("PGPU.get_all_records")), range(40)))
    assert results == [4] * 40
    assert len(grid_k2.db.tables["session"]) == 1


def _silent_listener() -> socket.socket:
    """Accepts connections (the kernel does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_a_listener_that_never_answers_times_out_naming_url_and_option() -> None:
    with _silent_listener() as sock:
        port = sock.getsockname()[1]
        session = XapiSession("http://root:s3cret@127.0.0.1:%d/" % port, "root", "pw",
                              Timeouts(connect=5, call=0.3))
        with pytest.raises(errors.XenServerTimeout) as info:
            session.call("VM.get_all")
    text = str(info.value)
    assert "[xenserver] call_timeout" in text and "0.3 s" in text
    assert "http://127.0.0.1:%d/" % port in text and "s3cret" not in text


def test_a_connection_that_cannot_be_opened_names_connect_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # the backlog is full now
            session = XapiSession("http://127.0.0.1:%d/" % port, "root", "pw",
                                  Timeouts(connect=0.3, call=5))
            with pytest.raises(errors.XenServerTimeout, match=r"\[xenserver\] connect_timeout"):
                session.call("VM.get_all")


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.end_headers()
        self.wfile.write(b"<html>this is not XAPI")

    def log_message(self, *args: object) -> None:
        pass


def test_a_garbage_answer_is_one_line_naming_the_url() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = "http://127.0.0.1:%d/" % server.server_address[1]
        with pytest.raises(errors.XapiAnswerInvalid) as info:
            XapiSession(url, "root", "pw").call("VM.get_all")
    finally:
        server.shutdown()
        server.server_close()
    text = str(info.value)
    assert url in text and "ExpatError" in text and "\n" not in text


def test_credentials_in_the_url_log_in_and_never_show(grid_k2: Simulator) -> None:
    url = grid_k2.url.replace("http://", "http://root:%s@" % PASSWORD)
    session = XapiSession(url, "someone-else", "wrong")
    assert len(session.call("PGPU.get_all")) == 4
    assert session.url == grid_k2.url and PASSWORD not in repr(session)
