"""Serving the sandbox over real loopback HTTP with werkzeug's threaded server.

werkzeug's stock request handler closes the connection after every answer. The handler here
keeps HTTP/1.1 connections alive (pooled clients reuse them), writes each answer with one
``send``, can drop a connection without answering (the ``drop`` fault), and logs nothing per
request.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

from session_fsm.contract import FAULT_INTERNAL

from .app import SandboxApp
from .config import SandboxConfig
from .control import CONTROL_PREFIX, SandboxControl
from .faults import ApiFault
from .responses import DROP_KEY
from .state import SandboxState

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

_log = logging.getLogger("session_fsm.sandbox")

_INTERNAL_ERROR = json.dumps(
    ApiFault(500, FAULT_INTERNAL, "Unexpected error", "The sandbox failed").body()
).encode()


class _Connections:
    """The open client connections, so shutdown can unblock idle keep-alive handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.opened = 0

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self.opened += 1
            if not self._closed:
                self._open.add(sock)
                return
        _shutdown(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            socks = list(self._open)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 keep-alive WSGI request handler (answers need no chunking: all are buffered)."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[_Connections]

    def setup(self) -> None:
        super().setup()
        with suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.connections.discard(self.connection)

    def run_wsgi(self) -> None:
        """Run the app for one request and write its buffered answer; keep the connection.

        (``Expect: 100-continue`` was already answered by ``parse_request``.)
        """
        environ = self.environ = self.make_environ()
        body = environ["wsgi.input"]
        if not environ.get("wsgi.input_terminated"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                self.close_connection = True
                self._send("400 Bad Request", [("Content-Type", "text/plain")], b"bad length")
                return
            body = environ["wsgi.input"] = LimitedStream(cast("IO[bytes]", self.rfile), length)
            environ["wsgi.input_terminated"] = True
        dropped = False

        def drop() -> None:
            nonlocal dropped
            dropped = True

        environ[DROP_KEY] = drop
        answer: list[Any] = ["500 Internal Server Error", []]
        chunks: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            answer[:] = [status, headers]
            return chunks.append

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not dropped:
                while body.read(65536):  # drain what the app left unread
                    pass
        except Exception as exc:
            self.close_connection = True
            if isinstance(exc, ConnectionError) or _is_disconnect(exc):
                return
            _log.exception("sandbox failed on %s %s", self.command, self.path)
            self._send(
                "500 Internal Server Error", [("Content-Type", "application/json")], _INTERNAL_ERROR
            )
            return
        if dropped:
            self.close_connection = True
            _shutdown(self.connection)
            return
        self._send(answer[0], answer[1], b"".join(chunks))

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """Write status line, headers and body with one ``sendall``."""
        code = int(status.split(None, 1)[0])
        lines = [
            f"{self.protocol_version} {status}\r\n",
            f"Server: {self.server_version}\r\nDate: {self.date_time_string()}\r\n",
        ]
        has_length = False
        for key, value in headers:
            lowered = key.lower()
            if lowered == "content-length":
                has_length = True
            elif lowered == "connection":
                if value.lower() == "close":
                    self.close_connection = True
                continue
            lines.append(f"{key}: {value}\r\n")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if self.command == "HEAD" or code in (204, 304):
            body = b""
        self.wfile.write(head + body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No per-request log: the sandbox is used in benchmarks."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Route werkzeug's own messages (bad request lines and such) to debug logging."""
        _log.debug(message, *args)


def _is_disconnect(exc: Exception) -> bool:
    from werkzeug.exceptions import ClientDisconnected

    return isinstance(exc, ClientDisconnected)


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _make_server(app: SandboxApp, host: str, port: int, conns: _Connections) -> BaseWSGIServer:
    """Bind ourselves (werkzeug prints and ``sys.exit``\\ s on bind errors), then wrap."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    handler = type("SandboxRequestHandler", (_KeepAliveHandler,), {"connections": conns})
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        # The server dup()s the descriptor; ours is closed on leaving the block.
        return make_server(
            host, port, app, threaded=True, request_handler=handler, fd=sock.fileno()
        )


class Sandbox:
    """A running sandbox: ``url`` (base URL with ``/apim``), ``root``, ``config``, ``control``."""

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        self.state = SandboxState(self.config)
        self.app = SandboxApp(self.state)
        self._connections = _Connections()
        self._server = _make_server(self.app, host, port, self._connections)
        self.host = host
        self.port: int = self._server.port
        self.root = f"http://{_display_host(host)}:{self.port}"
        self.url = self.root + "/apim"
        self.control_url = self.root + CONTROL_PREFIX
        self.state.base_url = self.url
        self.state.port = self.port
        self.control = SandboxControl(self.state)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def connections_opened(self) -> int:
        """How many TCP connections clients opened so far (to check keep-alive reuse)."""
        return self._connections.opened

    def start(self) -> Sandbox:
        """Serve in a background thread; return ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sandbox-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: close client connections, stop the loop, join every thread."""
        if self._closed:
            return
        self._closed = True
        self.state.close()
        self._connections.close_all()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def run_sandbox(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[Sandbox]:
    """Start a sandbox in a background thread (``port=0``: a free port); stop it on exit."""
    with Sandbox(config, host, port) as sandbox:
        yield sandbox


def banner(url: str, config: SandboxConfig) -> str:
    """The start-up text: where the sandbox listens and the demo credentials to log in with."""
    root = url[: -len("/apim")] if url.endswith("/apim") else url
    lines = [
        f"KS Trade API sandbox listening on {url}",
        "  serves:                 the session calls and every trading endpoint",
        f"  control plane:          {root}{CONTROL_PREFIX}  (GET it for its operations)",
        f"  consumer key:           {config.consumer_key}",
        f"  access token (Bearer):  {config.access_token}",
        "  app id, ip:             any non-empty value",
        f"  one-time token TTL:     {config.ott_ttl:g} s",
        f"  session TTL:            {config.session_ttl:g} s",
    ]
    for acc in config.accounts:
        code = f"access code {acc.access_code}" if acc.access_code else "no static access code"
        lines.append(f"  account:                userid {acc.userid}  password {acc.password}")
        lines.append(f"                          {code}")
        if acc.totp_secret:
            lines.append(f"                          TOTP secret {acc.totp_secret}")
    sessions = "one per user" if config.single_session else "many per user"
    dead = f"a dead one answers {config.invalid_session}"
    lines.append(f"  sessions:               {sessions}; {dead}")
    lines.append(f"  orders fill:            {config.fill}")
    if config.redirect_host:
        lines.append(f"  session/init redirects: {config.redirect_host}")
    lines.append("Press Ctrl+C to stop.")
    return "\n".join(lines)


def serve(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or until ``stop`` is set), then shut down cleanly.

    ``ready`` is called with the base URL (real port) once the sandbox listens (the CLI passes
    one that prints the :func:`banner`; the library itself never prints). Signal handlers are
    only installed from the main thread, and the previous ones are restored on return.
    """
    cfg = config or SandboxConfig()
    stop_event = stop or threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        with run_sandbox(cfg, host, port) as sandbox:
            if ready is not None:
                ready(sandbox.url)
            while not signalled and not stop_event.wait(0.2):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
