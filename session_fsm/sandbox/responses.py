"""Small helpers that build the sandbox's HTTP answers (JSON, faults, garbage, dropped)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from .faults import ApiFault

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: WSGI environ key under which the sandbox's own request handler puts a callable that makes it
#: close the connection without answering (the ``drop`` fault).
DROP_KEY = "session_fsm.sandbox.drop"

#: Body of a ``malformed`` answer: what a confused gateway might send instead of JSON.
MALFORMED_BODY = b"<html><body><h1>Service temporarily unavailable</h1></body></html>"


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON answer with an exact ``Content-Length`` (so keep-alive works)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return Response(data, status=status, mimetype="application/json")


def fault_response(fault: ApiFault) -> Response:
    """The ``{"fault": ...}`` answer of ``fault``."""
    return json_response(fault.body(), fault.status)


def malformed_response(status: int = 200) -> Response:
    """A non-JSON answer."""
    return Response(MALFORMED_BODY, status=status, mimetype="text/html")


def drop_connection(environ: WSGIEnvironment) -> Response:
    """Arrange for the connection to be closed without any answer.

    Under the sandbox's own request handler this only flags the request; the handler then
    shuts the socket down instead of writing the returned response. Under another werkzeug
    server the socket is shut down here, so the write of the returned response fails quietly.
    """
    dropper: Callable[[], None] | None = environ.get(DROP_KEY)
    if dropper is not None:
        dropper()
        return Response(b"", status=500)
    sock: socket.socket | None = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return Response(b"", status=500)
    # No socket to drop (e.g. werkzeug's test client): the closest thing is an empty 502.
    return Response(b"", status=502)
