"""What an operator reads when the database is misconfigured or broken.

Each case is made for real: a wrong password or role on the running
servers, a closed port, a listener that accepts and never answers, a
garbage or read-only SQLite file.  Every error must be one line, name the
``[database]`` option, show the URL with its password masked, and never
show the password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
import typing as ty

import pytest
import sqlalchemy as sa

from oslo_db import exception as oslo_db_exc

from pci_vgpu.db import api as db_api
from pci_vgpu.db import exception as db_exc
from pci_vgpu import manager
from tests.fixtures import db as db_fixtures
from tests.unit.db import inventory as inv

SECRET = "S3cr3t-pw"


def _admin(backend: str) -> sa.URL:
    db_fixtures.require(backend)
    return db_fixtures.admin_url(backend)


def _assert_one_line(exc: BaseException, *needles: str) -> str:
    text = str(exc)
    assert "\n" not in text, text
    assert SECRET not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def _sync_error(url: str | sa.URL, **settings: int) -> BaseException:
    if isinstance(url, sa.URL):
        url = url.render_as_string(hide_password=False)
    db = db_api.Database(url, db_api.Settings(**settings))
    try:
        with pytest.raises(db_exc.DatabaseError) as caught:
            db.sync()
    finally:
        db.dispose()
    return caught.value


@pytest.mark.mysql
def test_mariadb_wrong_password() -> None:
    url = _admin("mysql").set(password=SECRET)
    exc = _sync_error(url)
    assert isinstance(exc, db_exc.DatabaseAccessDenied)
    _assert_one_line(exc, "[database] connection", ":***@127.0.0.1",
                     "error 1045", "fix the user name or password")


@pytest.mark.mysql
def test_mariadb_password_in_the_query_string_is_masked() -> None:
    url = _admin("mysql").set(password=None).update_query_dict(
        {"password": SECRET})
    exc = _sync_error(url)
    assert isinstance(exc, db_exc.DatabaseAccessDenied)
    _assert_one_line(exc, "password=***")


@pytest.mark.mysql
def test_mariadb_unknown_database() -> None:
    exc = _sync_error(_admin("mysql").set(database="pcivgpu_no_such_db"))
    assert isinstance(exc, db_exc.DatabaseNotFound)
    _assert_one_line(exc, "pcivgpu_no_such_db", "create it")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.postgresql
def test_postgresql_wrong_port() -> None:
    port = _free_port()
    exc = _sync_error(_admin("postgresql").set(port=port, password=SECRET))
    assert isinstance(exc, db_exc.DatabaseUnreachable)
    # Still a DBConnectionError: wrap_db_retry(retry_on_disconnect) retries.
    assert isinstance(exc, oslo_db_exc.DBConnectionError)
    _assert_one_line(exc, ":%d" % port, "connect_timeout = 10 s",
                     "Connection refused")


@pytest.mark.postgresql
def test_postgresql_unknown_role() -> None:
    exc = _sync_error(_admin("postgresql").set(username="pcivgpu_no_role",
                                               password=SECRET))
    assert isinstance(exc, db_exc.DatabaseAccessDenied)
    _assert_one_line(exc, 'role "pcivgpu_no_role" does not exist',
                     "pcivgpu_no_role:***@")


def test_port_that_is_not_a_number() -> None:
    with pytest.raises(db_exc.InvalidConnectionUrl) as caught:
        db_api.Database("mysql+pymysql://nova:%s@db:33o6/nova" % SECRET)
    _assert_one_line(caught.value, "[database] connection",
                     "nova:***@db:33o6", "port is not a number")
    with pytest.raises(db_exc.InvalidConnectionUrl, match="out of range"):
        db_api.Database("postgresql://nova:pw@db:99999/nova")


@contextlib.contextmanager
def _silent_listener() -> ty.Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for sock in accepted + [server]:
            sock.close()


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "postgresql+psycopg2"])
def test_a_server_that_never_answers_times_out(scheme: str) -> None:
    with _silent_listener() as port:
        started = time.monotonic()
        exc = _sync_error("%s://nova:%s@127.0.0.1:%d/nova" % (scheme, SECRET, port),
                          connect_timeout=1)
        elapsed = time.monotonic() - started
    assert isinstance(exc, db_exc.DatabaseUnreachable)
    _assert_one_line(exc, "connect_timeout = 1 s", ":%d/nova" % port)
    assert elapsed < 10, elapsed  # bounded, not forever


def test_corrupt_sqlite_file(tmp_path: ty.Any,
                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pci_vgpu.sqlite"
    path.write_bytes(b"this is not an SQLite database at all" * 64)
    exc = _sync_error("sqlite:///%s" % path)
    assert isinstance(exc, db_exc.DatabaseFileCorrupt)
    _assert_one_line(exc, str(path), "file is not a database", "move it aside")
    # oslo.db logs errors it cannot classify with a whole traceback.
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_sqlite_file_in_a_missing_directory(tmp_path: ty.Any) -> None:
    path = tmp_path / "no" / "such" / "dir" / "pci_vgpu.sqlite"
    exc = _sync_error("sqlite:///%s" % path)
    assert isinstance(exc, db_exc.DatabaseFileUnopenable)
    _assert_one_line(exc, str(path))


@contextlib.contextmanager
def _read_only(path: ty.Any) -> ty.Iterator[None]:
    """Make ``path`` read-only for this process (root ignores modes)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip("cannot make a file read-only for root here: %s"
                    % done.stderr.strip())
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_sqlite_file_reads_and_names_itself_on_write(
        tmp_path: ty.Any) -> None:
    path = tmp_path / "pci_vgpu.sqlite"
    url = "sqlite:///%s" % path
    db = db_api.Database(url)
    db.sync()
    manager.PciDevTracker(db, "cn1").update_devices_from_hypervisor_resources(
        inv.report(inv.default_host()))
    db.dispose()
    with _read_only(path):
        ro = db_api.Database(url)
        ro.sync()  # at head: only read
        tracker = manager.PciDevTracker(ro, "cn1")
        assert len(tracker.devices()) == 2
        with pytest.raises(db_exc.DatabaseReadOnly) as caught:
            tracker.claim_instance("3f1c4e1a-0000-4000-8000-000000000001",
                                   [inv.vgpu_request()])
        ro.dispose()
    _assert_one_line(caught.value, str(path), "read-only", "writable")


def test_no_password_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with _silent_listener() as port:
        _sync_error("mysql+pymysql://nova:%s@127.0.0.1:%d/nova?password=%s"
                    % (SECRET, port, SECRET), connect_timeout=1)
    assert SECRET not in caplog.text
