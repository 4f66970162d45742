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

from .answers import Identity
from .config import SessionConfig
from .credentials import Credentials, as_secret, produce
from .errors import GatewayAuthError, KSError, SessionExpired
from .logs import emit
from .models import UserCredentials, UserDetails
from .snapshot import Snapshot
from .stores import StoredSession, TokenStore, store_key
from .validation import secret_header
from .wire import Wire, check_host


class EdgeCalls:
    """The wire calls of the table's edges (a mixin of SessionMachine)."""

    credentials: Credentials
    origin: str
    session_id: str
    config: SessionConfig
    _lock: Any
    _snap: Snapshot
    _pending: Snapshot | None
    _deferred: KSError | None
    #: (Bearer generation, the identity carrying that Bearer token), swapped as one value.
    _who: tuple[int, Identity]
    _key: str | None = None
    _wire: Wire
    _store: TokenStore
    _log: Any
    _clock: Callable[[], float]

    def identity(self) -> Identity:
        """Who the session calls as (carries the current Bearer token as a Secret)."""
        return self._who[1]

    def _gateway(self) -> tuple[int, Identity]:
        """The current Bearer generation (0: the configured token) and the identity carrying
        that token, read together: a request keeps both, so a rejection names its generation."""
        return self._who

    def refresh_bearer(self, rejected: int | None = None) -> bool:
        """Replace the gateway token from ``access_token_provider``; False if there is none.

        Single flight: the provider is asked once per rejected Bearer generation, however many
        threads met the rejection; a caller whose generation ``rejected`` was already replaced
        gets True at once (``None``: the current one is rejected).
        """
        timeout = self.config.relogin_timeout
        if not self._lock.acquire(timeout=timeout):
            raise GatewayAuthError(
                f"gave up after {timeout:g}s waiting for another thread's gateway token refresh",
                hint="raise relogin_timeout, or retry",
            )
        try:
            gen = self._who[0]
            if rejected is not None and rejected != gen:
                return True  # another thread replaced that token meanwhile
            provider = self.credentials.access_token_provider
            if provider is None:
                return False
            try:
                produced = provider()
            except Exception as exc:  # the provider's text may hold a token: name its type only
                raise GatewayAuthError(
                    f"access_token_provider failed: {type(exc).__name__}"
                ) from None
            # Checked like Credentials.access_token: a non-empty header-safe string, or an
            # error naming the provider before the bad token is sent.
            token = as_secret(produced, "access_token_provider")
            del produced  # no raising frame below keeps the plain token in a local
            token = secret_header("access_token_provider's token", token)
            c = self.credentials
            self._who = (gen + 1, Identity(c.userid, c.consumer_key, c.ip, c.app_id, token))
            emit(self._log, "info", "gateway_token_refreshed", session_id=self.session_id)
            return True
        finally:
            self._lock.release()

    def call_with_gateway_refresh(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; on a rejected Bearer token refresh it once from the provider, if any."""
        gen = self._who[0]
        try:
            return call()
        except GatewayAuthError:
            if not self.refresh_bearer(gen):
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

    def _call_refresh_session(self) -> None:
        # login + 2FA from Authenticated: the one-time token stays local (the snapshot keeps
        # the old session token until the new one is published with the state change).
        password, code = self.credentials.password_provider, self.credentials.access_code_provider
        assert password is not None and code is not None  # guarded
        userid, host = self.credentials.userid, self._snap.host
        login = UserCredentials(userid, password.get())
        ott = self.call_with_gateway_refresh(
            lambda: self._wire.login_with_user_id(host, self.identity(), login)
        ).one_time_token
        details = UserDetails(userid, code.get())
        res = self.call_with_gateway_refresh(
            lambda: self._wire.generate_session2_fa(host, self.identity(), ott, details)
        )
        gen = self._next_generation()
        now = self._clock()
        self._pending = self._snap.evolve(
            session_token=res.session_token, generation=gen, login_time=now
        )
        self._save(StoredSession(host, userid, res.session_token, gen, now))

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
