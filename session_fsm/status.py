"""A status server inside the bot: ``/metrics``, ``/healthz`` and a live status page.

    from session_fsm.status import serve_status
    server = serve_status(session, host="127.0.0.1", port=0)   # returns at once
    log.info("status page at %s", server.url)   # http://127.0.0.1:PORT/
    ...
    server.close()

It runs werkzeug's threaded server in a background thread and only *reads* the sessions:
``snapshot()``, ``history``, ``deadlines()``, ``renewal_waiters``, ``session_id`` and
``credentials.userid`` (the :class:`StatusSource` protocol), none of which blocks or does I/O.
So it never slows a session down, and a session of either driver (``KSSession``,
``AsyncKSSession``) plugs in; ``serve_status`` never blocks, so it can be called from inside a
running event loop as it is. Only stopping blocks (up to half a second, while the server
thread notices): inside a loop, ``await server.aclose()`` or ``async with serve_status(...)``.

- ``/metrics``: Prometheus text (needs ``session_fsm[metrics]``; 501 naming the extra without).
- ``/healthz``: 200 when every session is Authenticated (a soft refresh under way counts),
  503 and a short JSON reason otherwise: for systemd, Docker or Kubernetes checks.
- ``/``: one card per session (userid, state, generation, session age, time to the proactive
  deadlines, token fingerprint, the last transitions) and the state diagram with the current
  state and the last transition marked, polled from ``/api/status`` and redrawn in place.
  Every asset is served from the package: no CDN, works offline.

Nothing secret is served: tokens appear only as their keyed fingerprint (the one log lines show).
The server binds loopback by default; while bound to loopback it also refuses requests whose
``Host`` is not a loopback name (a web page's DNS-rebinding trick cannot read it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, Protocol

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .config import SessionConfig
from .core.snapshot import Snapshot, TransitionRecord
from .credentials import Credentials
from .drawing import arrow_for, failure_marker
from .errors import ConfigurationError
from .table import State

_log = logging.getLogger("session_fsm.status")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_ASSETS = {
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
    "/diagram.svg": ("session.svg", "image/svg+xml"),
}
#: What ``generate_latest`` writes: the Prometheus text format 0.0.4.
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class StatusSource(Protocol):
    """What the status server reads from a session (sync or async driver alike)."""

    @property
    def session_id(self) -> str: ...

    @property
    def credentials(self) -> Credentials: ...

    @property
    def config(self) -> SessionConfig: ...

    def snapshot(self) -> Snapshot: ...

    @property
    def history(self) -> tuple[TransitionRecord, ...]: ...

    @property
    def renewal_waiters(self) -> int: ...

    def deadlines(self, snap: Snapshot) -> tuple[float, float] | None: ...


def asset(name: str) -> bytes:
    """A file shipped in ``session_fsm/assets`` (page, script, style, diagram)."""
    return resources.files("session_fsm").joinpath("assets").joinpath(name).read_bytes()


def health(session: StatusSource) -> str | None:
    """None when ``session`` is healthy (Authenticated, or renewing with its old token still
    good), else a short reason: ``demo-user (s3) is Initialised: login failed: ...``."""
    snap = session.snapshot()
    if snap.state is State.AUTHENTICATED:  # a soft refresh, even a failed one, stays there
        return None
    why = f"{session.credentials.userid} ({session.session_id}) is {snap.state.value}"
    history = session.history
    marker = failure_marker(history[-1]) if history else None
    return f"{why}: {marker}" if marker else why


def _clock(session: StatusSource) -> float:
    clock: Callable[[], float] | None = getattr(session, "_clock", None)
    return clock() if clock is not None else dt.datetime.now(dt.timezone.utc).timestamp()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def _record(rec: TransitionRecord) -> dict[str, Any]:
    return {
        "time": _iso(rec.time),
        "trigger": rec.trigger,
        "src": rec.src.value,
        "dst": rec.dst.value,
        "outcome": rec.outcome,
        "status": rec.status,
        "fault_code": rec.fault_code,
        "error": rec.error,
        "reason": rec.reason,
        "generation": rec.generation,
    }


def session_view(session: StatusSource, transitions: int = 12) -> dict[str, Any]:
    """Everything the page shows of one session, JSON-ready, secret-free."""
    snap = session.snapshot()
    now = _clock(session)
    authenticated = snap.state is State.AUTHENTICATED
    deadlines = session.deadlines(snap) if authenticated else None
    history = session.history
    last = history[-1] if history else None
    arrow = arrow_for(last) if last is not None else None
    token = snap.session_token
    reason = health(session)
    return {
        "session_id": session.session_id,
        "userid": session.credentials.userid,
        "host": snap.host,
        "state": snap.state.value,
        "generation": snap.generation,
        "healthy": reason is None,
        "reason": reason,
        "age_seconds": now - snap.login_time if authenticated and snap.login_time else None,
        "soft_deadline_in": deadlines[0] - now if deadlines else None,
        "hard_deadline_in": deadlines[1] - now if deadlines else None,
        "token_fingerprint": token.fingerprint if token is not None and authenticated else None,
        "relogin_waiters": session.renewal_waiters,
        "transitions": [_record(r) for r in reversed(history[-transitions:])],
        "diagram": {
            "current": f"state-{snap.state.name}",
            "mark": arrow.key if arrow is not None else None,
            "marker": failure_marker(last) if last is not None else None,
            "marker_state": f"state-{last.dst.name}" if last is not None else None,
        },
    }


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without its per-request log lines (the library never prints)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        _log.debug(message, *args)


class StatusServer:
    """The running status server (see :func:`serve_status`). ``url`` ends with ``/``."""

    def __init__(
        self,
        sessions: Iterable[StatusSource],
        host: str,
        port: int,
        metrics: Any = None,
        refresh: float = 1.0,
    ) -> None:
        self.sessions = tuple(sessions)
        self.refresh = refresh
        self.metrics = metrics if metrics is not None else _metrics_for(self.sessions)
        self._loopback = host in _LOOPBACK
        self._server: BaseWSGIServer = make_server(
            host, port, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="session-fsm-status", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    async def aclose(self) -> None:
        """:meth:`close` for a coroutine: stops the server from a worker thread, so the event
        loop is not blocked while the server thread notices."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> StatusServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"StatusServer(url={self.url!r}, sessions={len(self.sessions)})"

    def health(self) -> list[str]:
        """Why the sessions are not all healthy (empty: all are)."""
        if not self.sessions:
            return ["no session is watched"]
        return [why for s in self.sessions if (why := health(s)) is not None]

    def status(self) -> dict[str, Any]:
        """The page's data: every session's view and the overall health."""
        problems = self.health()
        return {
            "healthy": not problems,
            "refresh": self.refresh,
            "sessions": [session_view(s) for s in self.sessions],
        }

    # --- WSGI ----------------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._answer(request)
        response.headers.update(_SECURITY_HEADERS)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if self._loopback and request.host.rsplit(":", 1)[0] not in _LOOPBACK:
            return _json({"error": "this status server only answers loopback host names"}, 403)
        if request.method not in ("GET", "HEAD"):
            return _json({"error": "only GET"}, 405)
        path = request.path
        if path == "/":
            page = asset("status.html").replace(b"{{REFRESH}}", str(self.refresh).encode())
            return Response(page, content_type="text/html; charset=utf-8")
        if path in _ASSETS:
            name, mime = _ASSETS[path]
            return Response(asset(name), content_type=mime)
        if path == "/api/status":
            return _json(self.status())
        if path == "/healthz":
            problems = self.health()
            if problems:
                return _json({"status": "unhealthy", "reason": "; ".join(problems)}, 503)
            return _json({"status": "ok", "sessions": len(self.sessions)})
        if path == "/metrics":
            return self._metrics_text()
        return _json({"error": "not found"}, 404)

    def _metrics_text(self) -> Response:
        if self.metrics is None:
            return Response(
                "metrics need prometheus_client: pip install 'session_fsm[metrics]'\n",
                status=501,
                content_type="text/plain; charset=utf-8",
            )
        from prometheus_client import generate_latest

        return Response(generate_latest(self.metrics.registry), content_type=_PROMETHEUS_TEXT)


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def _metrics_for(sessions: tuple[StatusSource, ...]) -> Any:
    """A SessionMetrics watching ``sessions``, or None without prometheus_client."""
    try:
        from .metrics import SessionMetrics
    except ConfigurationError:  # prometheus_client is not installed
        return None
    metrics = SessionMetrics()
    for s in sessions:
        metrics.watch(s)  # type: ignore[type-var]
    return metrics


def serve_status(
    *sessions: StatusSource,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics: Any = None,
    refresh: float = 1.0,
) -> StatusServer:
    """Serve ``/``, ``/healthz`` and ``/metrics`` for ``sessions`` from a background thread.

    ``port=0`` picks a free port (read ``server.url``). ``metrics``: a
    :class:`~session_fsm.metrics.SessionMetrics` already watching the sessions (default: a new
    one, when prometheus_client is installed). ``refresh``: how often the page polls, in
    seconds. Binding anything but loopback exposes the page to the network: see the README.
    Sessions of both drivers mix; from a coroutine, stop it with ``await server.aclose()`` (or
    ``async with serve_status(...) as server``).
    """
    return StatusServer(sessions, host, port, metrics=metrics, refresh=refresh)
