"""The wire call each edge of the transition table makes, and what it leaves for the edge.

Each ``_call_<name>`` is the ``before`` callback of the edges whose ``call`` is ``<name>``: it
runs after the guards and before the state changes, makes one call through the wire layer, and
leaves the tokens it got in ``_pending`` for the state change to publish with the new state. A
call that raises leaves the state as it was. :class:`~session_fsm.machine.SessionMachine` mixes
this in; the attributes below are the engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .credentials import Credentials, as_secret, produce
from .errors import GatewayAuthError, KSError, SessionExpired
from .logs import emit
from .models import UserCredentials, UserDetails
from .secret import Secret
from .snapshot import Snapshot
from .stores import StoredSession, TokenStore, store_key
from .validation import secret_header
from .wire import Identity, Wire, check_host


class EdgeCalls:
    """The wire calls of the table's edges (a mixin of SessionMachine)."""

    credentials: Credentials
    origin: str
    session_id: str
    _snap: Snapshot
    _pending: Snapshot | None
    _deferred: KSError | None
    _bearer: Secret
    _identity: Identity | None = None
    _key: str | None = None
    _wire: Wire
    _store: TokenStore
    _log: Any
    _clock: Callable[[], float]

    def identity(self) -> Identity:
        """Who the session calls as (carries the current Bearer token as a Secret)."""
        who = self._identity
        if who is None or who.access_token is not self._bearer:  # made once per Bearer token
            c = self.credentials
            who = self._identity = Identity(c.userid, c.consumer_key, c.ip, c.app_id, self._bearer)
        return who

    def refresh_bearer(self) -> bool:
        """Fetch a new gateway token from ``access_token_provider``; False if there is none."""
        provider = self.credentials.access_token_provider
        if provider is None:
            return False
        # Checked like Credentials.access_token: a non-empty header-safe string, or an error
        # naming the provider before the bad token is sent.
        self._bearer = secret_header(
            "access_token_provider's token", as_secret(provider(), "access_token_provider")
        )
        emit(self._log, "info", "gateway_token_refreshed", session_id=self.session_id)
        return True

    def call_with_gateway_refresh(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; on a rejected Bearer token refresh it once from the provider, if any."""
        try:
            return call()
        except GatewayAuthError:
            if not self.refresh_bearer():
                raise
            return call()

    def _call_session_init(self) -> None:
        res = self.call_with_gateway_refresh(
            lambda: self._wire.session_init(self.origin, self.identity())
        )
        host = self.origin
        if res.redirect is not None:
            host = check_host(
                _redirect_url(res.redirect.host, res.redirect.port), self._wire.config
            )
        self._pending = self._snap.evolve(host=host)

    def _call_login_with_user_id(self) -> None:
        provider = self.credentials.password_provider
        assert provider is not None  # guarded by has_password
        body = UserCredentials(self.credentials.userid, produce(provider, "password"))
        host = self._snap.host
        res = self.call_with_gateway_refresh(
            lambda: self._wire.login_with_user_id(host, self.identity(), body)
        )
        self._pending = self._snap.evolve(one_time_token=res.one_time_token, ott_time=self._clock())

    def _call_generate_session2_fa(self) -> None:
        provider = self.credentials.access_code_provider
        ott = self._snap.one_time_token
        assert provider is not None and ott is not None  # guarded
        body = UserDetails(self.credentials.userid, produce(provider, "access_code"))
        host = self._snap.host
        res = self.call_with_gateway_refresh(
            lambda: self._wire.generate_session2_fa(host, self.identity(), ott, body)
        )
        gen = self._next_generation()
        now = self._clock()
        self._pending = self._snap.evolve(
            session_token=res.session_token, generation=gen, login_time=now
        )
        self._save(StoredSession(host, self.credentials.userid, res.session_token, gen, now))

    def _call_session_logout(self) -> None:
        snap = self._snap
        assert snap.session_token is not None  # Authenticated holds one
        try:
            self._wire.session_logout(snap.host, self.identity(), snap.session_token)
        except SessionExpired:
            pass  # already gone on the server: the goal of logout is met
        except KSError as exc:
            self._deferred = exc
        finally:
            stored = self._store.load(self.store_key())
            if stored is not None and stored.generation <= snap.generation:
                self._store.delete(self.store_key())  # never another process's newer session

    # --- store -------------------------------------------------------------------------------

    def store_key(self) -> str:
        """The key this session is stored under (per origin host and userid)."""
        key = self._key
        if key is None:  # origin and userid never change: made once
            key = self._key = store_key(self.origin, self.credentials.userid)
        return key

    def _next_generation(self) -> int:
        stored = self._store.load(self.store_key())
        return max(self._snap.generation, stored.generation if stored else 0) + 1

    def _save(self, record: StoredSession) -> None:
        if self._store.save(self.store_key(), record) is False:
            # Fenced: another process saved a session as new or newer while our lock had
            # lapsed. Ours stays in use; on its next 401 the stored one is adopted.
            emit(self._log, "warning", "session_save_refused", session_id=self.session_id,
                 generation=record.generation)  # fmt: skip


def _redirect_url(host: str, port: int | None) -> str:
    """Turn a redirect's host (full URL or bare name) into a base URL."""
    if "://" in host:
        return host.rstrip("/")
    netloc = host if port in (None, 443) else f"{host}:{port}"
    return f"https://{netloc}/apim"
