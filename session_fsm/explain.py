"""What an error says: the server's own explanation made safe to show, and the cause of a
failed connection in words (refused, DNS lookup failed, TLS failed, timed out, dropped).

The server's fault text is hostile input: it is cut to :data:`TEXT_MAX` characters, control
and format characters (and terminal escapes) are dropped, and any long run of letters and
digits with a digit in it (a token, a key, a hash) is replaced by ``…``. Connection causes
are read from the exception classes of urllib3, requests and the standard library, never
from their text (which may hold a URL); only the host and port, never user info, are named.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import unicodedata
from collections.abc import Iterator

import requests
from urllib3 import exceptions as u3
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

#: Most characters of the server's text shown in a message.
TEXT_MAX = 200
#: A run this long of letters, digits and token punctuation, with a digit in it, may be a
#: secret (a JWT, a key, a hash): never shown. A long plain word or host name is kept.
_TOKENISH = re.compile(r"[A-Za-z0-9_+=.~-]{24,}")
_DIGIT = re.compile(r"[0-9]")
_SPACE = re.compile(r"\s+")
#: A terminal escape sequence (CSI ``ESC [ ... letter``, or ESC and one character).
_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|.)?", re.DOTALL)
#: An OpenSSL reason (``CERTIFICATE_VERIFY_FAILED``): a fixed identifier, safe to show.
_SSL_REASON = re.compile(r"[A-Z0-9_]{3,60}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def safe_text(text: object) -> str:
    """``text`` fit for a message: printable, one line, no token-like run, at most
    :data:`TEXT_MAX` characters."""
    if not isinstance(text, str):
        return ""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in _ESCAPE.sub("", text[: TEXT_MAX * 4])
        if ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    kept = _TOKENISH.sub(_hide, _SPACE.sub(" ", kept)).strip()
    return kept if len(kept) <= TEXT_MAX else kept[: TEXT_MAX - 1].rstrip() + "…"


def _hide(found: re.Match[str]) -> str:
    run = found.group(0)
    return "…" if _DIGIT.search(run) else run


def server_text(message: object, description: object) -> str:
    """The server's explanation of a fault: ``message (description)``, either alone, or ""."""
    m, d = safe_text(message), safe_text(description)
    if m and d and m.lower() not in d.lower() and d.lower() not in m.lower():
        return safe_text(f"{m} ({d})")
    return safe_text(max(m, d, key=len))


def endpoint(url: str) -> str:
    """``host:port`` the URL connects to (no user info, default port filled in)."""
    try:
        parts = parse_url(url)
    except LocationParseError:
        return "the configured host"
    host = parts.host or "?"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS.get((parts.scheme or "").lower())
    return f"{host}:{port}" if port else host


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the reasons urllib3 wrapped in it, and their causes (each once)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
        todo.extend(a for a in e.args[:1] if isinstance(a, BaseException))
        todo.extend((e.__cause__, e.__context__))


def connection_cause(exc: BaseException) -> tuple[str, str]:
    """``(kind, words)`` for a failed request: kind is ``refused``, ``dns``, ``tls``,
    ``connect-timeout``, ``read-timeout``, ``proxy``, ``dropped`` or ``other``."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, (u3.ProxyError, requests.exceptions.ProxyError)):
            return "proxy", "the proxy failed"
    for e in chain:
        if isinstance(e, (u3.NameResolutionError, socket.gaierror)):
            return "dns", "DNS lookup failed (no such host, or no DNS)"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            reason = getattr(e, "reason", None)
            named = isinstance(reason, str) and _SSL_REASON.fullmatch(reason)
            shown = f" ({reason})" if named else ""
            return "tls", f"TLS handshake failed{shown}"
    for e in chain:
        if isinstance(e, (u3.SSLError, requests.exceptions.SSLError)):
            return "tls", "TLS handshake failed"
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "refused", "connection refused (nothing listens on that port?)"
    for e in chain:
        if isinstance(e, (u3.ReadTimeoutError, requests.exceptions.ReadTimeout)):
            return "read-timeout", "no answer in time (read timeout)"
        if isinstance(e, u3.NewConnectionError):
            break  # urllib3's NewConnectionError subclasses ConnectTimeoutError: not a timeout
        if isinstance(e, (u3.ConnectTimeoutError, requests.exceptions.ConnectTimeout)):
            return "connect-timeout", "connecting timed out"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "read-timeout", "timed out"
    for e in chain:
        if isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "dropped", "the connection was reset"
        if isinstance(e, (u3.ProtocolError, requests.exceptions.ChunkedEncodingError)):
            return "dropped", "the connection closed before the whole answer"
    for e in chain:
        if isinstance(e, OSError) and e.errno is not None:
            name = errno.errorcode.get(e.errno, str(e.errno))
            return "other", f"connection failed ({name}: {safe_text(e.strerror)})"
    return "other", f"connection failed ({type(exc).__name__})"


#: What to do next, by cause.
HINTS = {
    "refused": "check the host and port (host=), and that the server is running",
    "dns": "check the host name (host=) and this machine's DNS",
    "tls": "check that the port speaks https, and verify= (the CA bundle)",
    "connect-timeout": "check the host, port and firewall, or raise timeout= (connect)",
    "read-timeout": "raise timeout= if the API is slow, or retry later",
    "proxy": "check the proxy settings (HTTPS_PROXY, proxies=)",
    "dropped": "retry: the server or a middlebox closed the connection",
    "other": "check the network; the call may be retried",
}
