"""A tiny loopback KS API whose answers a test scripts byte for byte (``http.server``).

The sandbox answers only what the real API would; hostile-answer tests need bodies no sandbox
fault makes (a string port, a token with CR/LF, JSON nested 50,000 deep). This server answers
the four session calls and one trading path with valid bodies unless told otherwise by
:meth:`AnswerServer.script`, and counts what it was asked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from session_fsm import AsyncKSSession, KSSession, contract

OTT = "ott-0123456789abcdef"
SESSION_TOKEN = "sess-0123456789abcdef"
TRADING = contract.ORDERS_REPORT


class AnswerServer:
    """Serves ``/apim`` + a session call's path with a valid answer, or with the scripted one."""

    def __init__(self, *, keep_alive: bool = False) -> None:
        #: A test's own way to answer: ``writer(handler, path)`` answers the request itself
        #: through ``handler`` (True) or leaves it to the server (False).
        self.writer: Callable[[BaseHTTPRequestHandler, str], bool] | None = None
        self._scripted: dict[tuple[str, str], tuple[int, bytes, float]] = {}
        self._floods: dict[tuple[str, str], tuple[int, int]] = {}
        #: The ``Accept`` headers of the last request to each "METHOD path".
        self.accepts: dict[str, list[str]] = {}
        #: Bytes of flooded bodies written so far (see :meth:`flood`).
        self.flooded = 0
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections alive (every answer of this server has a length)
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.removeprefix("/apim")
                with outer._lock:
                    outer.accepts[f"{self.command} {path}"] = self.headers.get_all("Accept") or []
                writer = outer.writer
                if writer is not None and writer(self, path):
                    return
                flood = outer._floods.get((self.command, path))
                if flood is not None:
                    self._flood(*flood)
                    return
                status, body, stall = outer._take(self.command, path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                # A stalled answer promises more body than it sends, then waits.
                self.send_header("Content-Length", str(len(body) + (10 if stall else 0)))
                self.end_headers()
                self.wfile.write(body)
                if stall:
                    self.wfile.flush()
                    time.sleep(stall)
                    self.close_connection = True

            def _flood(self, status: int, size: int) -> None:
                """``size`` bytes of one JSON string, no ``Content-Length`` (the connection's
                close ends it), written until the client stops reading."""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                chunk = b"x" * 65536
                self.wfile.write(b'{"message": "')
                try:
                    while outer.flooded < size:
                        self.wfile.write(chunk)
                        with outer._lock:
                            outer.flooded += len(chunk)
                    self.wfile.write(b'"}')
                except OSError:  # the client closed the connection
                    pass
                self.close_connection = True

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/apim"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def valid(self, method: str, path: str) -> dict[str, Any]:
        """The valid payload (inside the Success envelope) of one call."""
        if (method, path) == contract.SESSION_INIT:
            return {
                "redirect": {"host": self.url, "port": self._server.server_address[1]},
                "encryption": {"keySize": 0, "publickKey": "", "type": "PLAIN"},
                "weblink": {"url": self.url + "/weblink"},
                "userType": "G",
                "status": "Success",
                "message": "",
                "userid": "ans-user",
            }
        if (method, path) == contract.LOGIN_USERID:
            return {"oneTimeToken": OTT, "mpin": "N", "biometric": "N", "message": "ok"}
        if (method, path) == contract.TWO_FA_ACCESSCODE:
            return {
                "sessionToken": SESSION_TOKEN,
                "userId": "ans-user",
                "clientCode": "ANS",
                "clientName": "Answers",
                "emailId": "a@example.com",
                "phoneNo": "XX00",
                "enabledSegments": ["CASH"],
                "enabledProducts": ["NORMAL"],
                "publicToken": "pub-0123456789",
                "loginTime": 1_800_000_000,
            }
        if (method, path) == contract.SESSION_LOGOUT:
            return {"message": "logged out"}
        return {"orders": []}

    def _take(self, method: str, path: str) -> tuple[int, bytes, float]:
        with self._lock:
            self.calls[f"{method} {path}"] = self.calls.get(f"{method} {path}", 0) + 1
            scripted = self._scripted.get((method, path))
        if scripted is not None:
            return scripted
        if (method, path) == TRADING:
            return 200, b"[]", 0.0
        return 200, json.dumps({"Success": self.valid(method, path)}).encode(), 0.0

    def script(
        self, method: str, path: str, status: int, body: bytes, *, stall: float = 0.0
    ) -> None:
        """Answer ``method path`` with ``status`` and ``body`` from now on; ``stall`` > 0
        promises more body than is sent and waits that long before closing."""
        with self._lock:
            self._scripted[(method, path)] = (status, body, stall)

    def flood(self, method: str, path: str, status: int, size: int) -> None:
        """Answer ``method path`` with ``status`` and a body of ``size`` bytes with no
        ``Content-Length``, written while the client reads (:attr:`flooded` counts them)."""
        with self._lock:
            self._floods[(method, path)] = (status, size)

    def reset(self) -> None:
        """Valid answers everywhere again; counts cleared."""
        with self._lock:
            self._scripted.clear()
            self._floods.clear()
            self.calls.clear()

    def start(self) -> AnswerServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def answer_server(*, keep_alive: bool = False) -> Iterator[AnswerServer]:
    """A running :class:`AnswerServer` (``keep_alive``: HTTP/1.1), shut down after."""
    server = AnswerServer(keep_alive=keep_alive).start()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def recording_server() -> Iterator[tuple[AnswerServer, list[dict[str, str]]]]:
    """An answer server, and the headers (names in lower case) of every request it got."""
    seen: list[dict[str, str]] = []
    with answer_server() as server:

        def record(handler: BaseHTTPRequestHandler, path: str) -> bool:
            seen.append({k.lower(): v for k, v in handler.headers.items()})
            return False

        server.writer = record
        yield server, seen


@contextmanager
def answered_session(**options: Any) -> Iterator[tuple[AnswerServer, KSSession]]:
    """A running :class:`AnswerServer` and a ``KSSession`` on it (the demo credentials, fast
    retries, short timeouts unless ``options`` say otherwise); both closed after."""
    from tests.conftest import FAST_RETRY, make_credentials

    options.setdefault("retry", FAST_RETRY)
    options.setdefault("timeout", (2.0, 5.0))
    with answer_server() as server:
        s = KSSession(make_credentials(), host=server.url, **options)
        try:
            yield server, s
        finally:
            s.close()


def connected_session(server: AnswerServer) -> KSSession:
    """A ``KSSession`` on ``server``, connected (the demo credentials, fast retries, a 10 s read
    timeout); the caller closes it."""
    from tests.conftest import FAST_RETRY, make_credentials

    s = KSSession(make_credentials(), host=server.url, retry=FAST_RETRY, timeout=(2.0, 10.0))
    s.connect()
    return s


@asynccontextmanager
async def connected_async_session(server: AnswerServer) -> AsyncIterator[AsyncKSSession]:
    """An ``AsyncKSSession`` on ``server``, connected (as :func:`connected_session`), closed
    after."""
    from tests.conftest import FAST_RETRY, make_credentials

    async with AsyncKSSession(
        make_credentials(), host=server.url, retry=FAST_RETRY, timeout=(2.0, 10.0)
    ) as s:
        await s.connect()
        yield s
