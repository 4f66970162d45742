"""Raw loopback servers for transport tests: one that only counts connections (standing in
for an attacker's host) and one that drips its answer a byte at a time."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


class Listener:
    """A TCP listener on ``host`` that accepts, counts and drops every connection."""

    def __init__(self, port: int = 0, host: str = "127.0.0.2") -> None:
        self.sock = socket.create_server((host, port))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(65536)

    def close(self) -> None:
        _stop_listening(self.sock)
        self._thread.join(5)


@contextlib.contextmanager
def listening(port: int = 0) -> Iterator[Listener]:
    listener = Listener(port)
    try:
        yield listener
    finally:
        listener.close()


class Drip:
    """An HTTP server on 127.0.0.1 that answers every request slowly, one byte per ``every``
    seconds: the headers (``what="headers"``) or the body of a well-formed JSON answer."""

    BODY = b'{"Success": {"status": "Success", "message": "' + b"x" * 400 + b'"}}'

    def __init__(self, what: str, every: float = 0.05) -> None:
        self.what = what
        self.every = every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/apim"
        self.connections = 0
        self.sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(self.BODY)
            )
            slow, fast = (head, b"") if self.what == "headers" else (self.BODY, head)
            try:
                conn.sendall(fast)
                rest = slow + (self.BODY if self.what == "headers" else b"")
                for i in range(len(rest)):
                    if self._stop.wait(self.every):
                        return
                    conn.sendall(rest[i : i + 1])
                    self.sent += 1
            except OSError:
                return  # the client gave up: that is the point

    def close(self) -> None:
        self._stop.set()
        _stop_listening(self.sock)
        self._accepter.join(5)
        for t in self._threads:
            t.join(5)


@contextlib.contextmanager
def dripping(what: str, every: float = 0.05) -> Iterator[Drip]:
    drip = Drip(what, every)
    try:
        yield drip
    finally:
        drip.close()


def _stop_listening(sock: socket.socket) -> None:
    """Wake a thread blocked in accept() (closing alone does not, on Linux), then close."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    """Poll ``predicate()`` every 10 ms until true or ``timeout`` passes; return its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return bool(predicate())  # type: ignore[operator]
