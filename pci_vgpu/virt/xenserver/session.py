"""One XAPI connection: login, calls, re-login and logout.

Uses the real ``XenAPI.Session`` client.  That client already logs in again
and retries when a call answers ``SESSION_INVALID`` (a XAPI restart, a
session timeout); when even that fails it raises ``xmlrpc.client.Fault``.
This wrapper then drops the client, logs in once more from scratch and
retries the call a single time before giving up with
:class:`~.errors.XenServerSessionLost`.  Every ``XenAPI.Failure`` becomes an
:class:`~.errors.XapiFailure` naming the method.  The password is kept only
to log in and never appears in a message or a log line.
"""

from __future__ import annotations

import logging
import threading
import typing as ty
import xmlrpc.client

import XenAPI

from pci_vgpu.virt.xenserver import errors

LOG = logging.getLogger(__name__)

API_VERSION = "2.21"
ORIGINATOR = "pci_vgpu"


class XapiSession:
    """A logged-in XAPI endpoint; ``call("VM.start", ref, False, False)``."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self.username = username
        self._password = password
        self._client: ty.Any = None
        # XenAPI.Session keeps one session ref and one HTTP connection:
        # calls from several threads take turns.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return "XapiSession(%s as %s)" % (self.url, self.username)

    def _login(self) -> ty.Any:
        client = XenAPI.Session(self.url)
        try:
            client.xenapi.login_with_password(self.username, self._password,
                                              API_VERSION, ORIGINATOR)
        except XenAPI.Failure as exc:
            if exc.details and exc.details[0] == "SESSION_AUTHENTICATION_FAILED":
                raise errors.XenServerAuthFailed(connection=self.url, user=self.username) from None
            raise errors.from_failure("session.login_with_password", exc.details) from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise errors.XenServerSessionLost(connection=self.url, reason=str(exc)) from None
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
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise errors.XenServerSessionLost(connection=self.url, reason=str(exc)) from None

    def close(self) -> None:
        """Log out; a session already gone is not an error."""
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        try:
            client.xenapi.session.logout()
        except (XenAPI.Failure, xmlrpc.client.Fault, OSError) as exc:
            LOG.info("Logout from %(url)s failed: %(err)s", {"url": self.url, "err": exc})
