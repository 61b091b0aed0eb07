"""One XAPI connection: login, calls, re-login, logout and timeouts.

Uses the real ``XenAPI.Session`` client, over a transport with two limits
(``[xenserver] connect_timeout``: to open the TCP/TLS connection;
``call_timeout``: the longest XAPI may stay silent during a call), so a
listener that accepts and never answers fails with
:class:`~.errors.XenServerTimeout` naming the URL and the option instead of
hanging.  An answer that is not XML-RPC (a web server, a proxy's error page)
is :class:`~.errors.XapiAnswerInvalid`.  The client  That client already logs in again
and retries when a call answers ``SESSION_INVALID`` (a XAPI restart, a
session timeout); when even that fails it raises ``xmlrpc.client.Fault``.
This wrapper then drops the client, logs in once more from scratch and
retries the call a single time before giving up with
:class:`~.errors.XenServerSessionLost`.  Every ``XenAPI.Failure`` becomes an
:class:`~.errors.XapiFailure` naming the method.  The password is kept only
to log in and never appears in a message or a log line; a URL that carries
credentials (``http://root:PASSWORD@host/``) gives them to the login and is
used and shown without them.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import threading
import typing as ty
import urllib.parse
import xml.parsers.expat
import xmlrpc.client

import XenAPI

from pci_vgpu import redact
from pci_vgpu.virt.xenserver import errors

LOG = logging.getLogger(__name__)

API_VERSION = "2.21"
ORIGINATOR = "pci_vgpu"


#: Defaults of ``[xenserver] connect_timeout`` and ``call_timeout`` (seconds).
CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 120.0
#: What a garbage answer raises inside xmlrpc.client.
_GARBAGE = (xml.parsers.expat.ExpatError, xmlrpc.client.ResponseError,
            http.client.HTTPException, ValueError, TypeError)


class _ConnectTimeout(OSError):
    """The TCP/TLS connection could not be opened in time."""


@dataclasses.dataclass(frozen=True)
class Timeouts:
    connect: float = CONNECT_TIMEOUT
    call: float = CALL_TIMEOUT


class _TimedHTTP(http.client.HTTPConnection):
    """Connects within ``connect`` seconds, then waits ``call`` per read."""

    def __init__(self, host: str, timeouts: Timeouts) -> None:
        super().__init__(host, timeout=timeouts.connect)
        self._timeouts = timeouts

    def connect(self) -> None:
        _timed_connect(self, super().connect, self._timeouts)


class _TimedHTTPS(http.client.HTTPSConnection):
    """:class:`_TimedHTTP` over TLS (the handshake counts as connecting)."""

    def __init__(self, host: str, timeouts: Timeouts, context: ty.Any = None) -> None:
        super().__init__(host, timeout=timeouts.connect, context=context)
        self._timeouts = timeouts

    def connect(self) -> None:
        _timed_connect(self, super().connect, self._timeouts)


def _timed_connect(conn: http.client.HTTPConnection, connect: ty.Callable[[], None],
                   timeouts: Timeouts) -> None:
    try:
        connect()
    except TimeoutError as exc:
        raise _ConnectTimeout(str(exc)) from exc
    conn.sock.settimeout(timeouts.call)


class _Transport(xmlrpc.client.Transport):
    """xmlrpc's transport with :class:`Timeouts` on every connection.

    http or https by the URL's scheme (``xmlrpc.client.SafeTransport``'s
    job, with the default TLS context).
    """

    def __init__(self, secure: bool, timeouts: Timeouts) -> None:
        super().__init__()
        self._secure = secure
        self._timeouts = timeouts

    def make_connection(self, host: ty.Any) -> http.client.HTTPConnection:
        cached = ty.cast("tuple[ty.Any, http.client.HTTPConnection] | None", self._connection)
        if cached and host == cached[0]:
            return cached[1]
        chost, self._extra_headers, _x509 = self.get_host_info(host)
        conn: http.client.HTTPConnection = (
            _TimedHTTPS(chost, self._timeouts) if self._secure
            else _TimedHTTP(chost, self._timeouts))
        self._connection = host, conn
        return conn


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host/`` -> (``http://host/``, user, pw)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = "[%s]" % netloc  # an IPv6 literal
    if parts.port is not None:
        netloc += ":%d" % parts.port
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return clean, urllib.parse.unquote(parts.username or "") or None, (
        urllib.parse.unquote(parts.password) if parts.password is not None else None)


class XapiSession:
    """A logged-in XAPI endpoint; ``call("VM.start", ref, False, False)``."""

    def __init__(self, url: str, username: str, password: str,
                 timeouts: Timeouts | None = None) -> None:
        clean, url_user, url_password = split_credentials(url)
        self.url = redact.mask_url(clean)
        self._target = clean
        self.username = url_user or username
        self._password = url_password if url_password is not None else password
        self._timeouts = timeouts or Timeouts()
        self._client: ty.Any = None
        # XenAPI.Session keeps one session ref and one HTTP connection:
        # calls from several threads take turns.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return "XapiSession(%s as %s)" % (self.url, self.username)

    def _transport_error(self, method: str, exc: Exception) -> Exception:
        """The pci_vgpu error for a transport failure of ``method``."""
        if isinstance(exc, _ConnectTimeout):
            return errors.XenServerTimeout(
                connection=self.url, what="could not be connected to",
                seconds="%g" % self._timeouts.connect, option="connect_timeout")
        if isinstance(exc, TimeoutError):
            return errors.XenServerTimeout(
                connection=self.url, what="did not answer %s" % method,
                seconds="%g" % self._timeouts.call, option="call_timeout")
        if isinstance(exc, _GARBAGE):
            return errors.XapiAnswerInvalid(connection=self.url, method=method,
                                            reason=_first_line(exc))
        return errors.XenServerSessionLost(connection=self.url, reason=_first_line(exc))

    def _login(self) -> ty.Any:
        client = XenAPI.Session(self._target, transport=_Transport(
            self._target.startswith("https:"), self._timeouts))
        method = "session.login_with_password"
        try:
            client.xenapi.login_with_password(self.username, self._password,
                                              API_VERSION, ORIGINATOR)
        except XenAPI.Failure as exc:
            if exc.details and exc.details[0] == "SESSION_AUTHENTICATION_FAILED":
                raise errors.XenServerAuthFailed(connection=self.url, user=self.username) from None
            raise errors.from_failure(method, exc.details) from None
        except (OSError, xmlrpc.client.ProtocolError) + _GARBAGE as exc:
            raise self._transport_error(method, exc) from None
        LOG.debug("Logged in to XAPI at %(url)s as %(user)s", {"url": self.url, "user": self.username})
        return client

    def client(self) -> ty.Any:
        """The logged-in ``XenAPI.Session``, logging in on first use."""
        if self._client is None:
            self._client = self._login()
        return self._client

    def call(self, method: str, *args: object) -> ty.Any:
        """Call ``Class.message`` with ``args`` after the session ref.

        :raises: XapiFailure for a XAPI ``Failure``; XenServerSessionLost or
            XenServerAuthFailed when no session can be had.
        """
        with self._lock:
            return self._call_relogin(method, args)

    def _call_relogin(self, method: str, args: tuple[object, ...]) -> ty.Any:
        try:
            return self._call_once(method, args)
        except xmlrpc.client.Fault as fault:
            LOG.warning("XAPI session at %(url)s lost (%(fault)s); logging in again",
                        {"url": self.url, "fault": fault.faultString})
            self._client = None
        try:
            return self._call_once(method, args)
        except xmlrpc.client.Fault as fault:
            self._client = None
            raise errors.XenServerSessionLost(connection=self.url, reason=fault.faultString) from None

    def _call_once(self, method: str, args: tuple[object, ...]) -> ty.Any:
        client = self.client()
        try:
            return client.xenapi_request(method, args)
        except XenAPI.Failure as exc:
            if exc.details and exc.details[0] == "SESSION_AUTHENTICATION_FAILED":
                # The client's own re-login after SESSION_INVALID was refused.
                self._client = None
                raise errors.XenServerAuthFailed(connection=self.url, user=self.username) from None
            raise errors.from_failure(method, exc.details) from None
        except (OSError, xmlrpc.client.ProtocolError) + _GARBAGE as exc:
            raise self._transport_error(method, exc) from None

    def close(self) -> None:
        """Log out; a session already gone is not an error."""
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        try:
            client.xenapi.session.logout()
        except (XenAPI.Failure, xmlrpc.client.Fault, OSError) + _GARBAGE as exc:
            LOG.info("Logout from %(url)s failed: %(err)s", {"url": self.url, "err": exc})


def _first_line(exc: Exception) -> str:
    text = redact.mask(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
