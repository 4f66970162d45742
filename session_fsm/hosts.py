"""The host allow-list: which URLs may receive the session's credentials.

The check decides on the host the transport will connect to, not on what some other parser
reads. A URL passes only when its authority (RFC 3986: what follows ``scheme://`` up to the
first ``/``, ``?`` or ``#``) is a plain host and port with nothing a parser could read two ways:

- no user info (``user:pw@``), which no KS URL has;
- the host is an IP literal (``[v6]``) or a DNS name of ASCII labels (letters, digits, ``-``,
  ``_``), at most one trailing dot: no backslash, whitespace, control character, ``%``, or
  non-ASCII character (an international name is given in its IDNA ``xn--`` form);
- the port, if any, is 1-65535 in digits;
- a loopback name or an IPv4 address has no trailing dot (``localhost.`` and ``127.0.0.1.``
  are looked up in DNS, which may answer any address);
- urllib3's ``parse_url`` (what requests and urllib3 connect to) and the standard library's
  ``urlsplit`` both read exactly that host.

Then the host must be loopback (``127.0.0.1``, ``localhost``, ``::1``; with ``allow_loopback``,
on http or https) or, on https, equal to or under one of ``allowed_domains``. An IPv4 address
other than loopback passes only when listed exactly. Without ``allow_loopback``, another
spelling of this machine (``127.0.0.2``, ``127.1``, ``0.0.0.0``, ``*.localhost``) is refused
even when listed. A session whose own host is not loopback checks its redirects, stored hosts,
``adopt()``, absolute URLs and ``s.auth`` requests with loopback refused, whatever
``allow_loopback`` says (:class:`~session_fsm.core.view.SessionView`): loopback is for the
sandbox, which a session reaches by being configured there.

Messages show the host without any user info, escaped and shortened.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .errors import ConfigurationError, UnsafeRedirect

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

#: ``scheme://authority`` at the start of a URL, the authority read as RFC 3986 reads it.
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_IP_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # an inet_aton() part: the name is an address
_SHOWN_MAX = 80
#: Why loopback is refused: allow_loopback is off, or (whatever it says) the session's own
#: host is not loopback (see SessionView), and what to do about it.
_NO_LOOPBACK = (
    "loopback hosts are not allowed (allow_loopback is off, or the session's host is not "
    "loopback)"
)
_LOOPBACK_HINT = (
    "loopback is for the sandbox: only a session configured on a loopback host sends there "
    "(with allow_loopback=True); do not send this session's requests to that URL"
)


def refusal(url: str, allowed_domains: tuple[str, ...], allow_loopback: bool) -> str | None:
    """Why ``url`` may not receive credentials under the allow-list, or None when it may."""
    found = _ORIGIN.match(url)
    if found is None:
        return "not an absolute http(s) URL"
    return _refusal(found.group(0), tuple(allowed_domains), bool(allow_loopback))


@functools.lru_cache(maxsize=256)  # keyed by origin: a session meets one or two hosts
def _refusal(origin: str, allowed_domains: tuple[str, ...], allow_loopback: bool) -> str | None:
    found = _ORIGIN.fullmatch(origin)
    assert found is not None
    scheme, authority = found.group(1).lower(), found.group(2)
    if scheme not in ("http", "https"):
        return "not an http(s) URL"
    if "@" in authority:
        return "the URL carries user info"
    host, port = _split_authority(authority)
    if host is None:
        return "the host is not a DNS name or IP literal (RFC 3986)"
    if port is not None and not (_PORT.fullmatch(port) and 0 < int(port) <= 65535):
        return "the port is not a number from 1 to 65535"
    try:  # the parsers that send must read this very host (they do, for a host this plain)
        sent_host = parse_url(origin).host
        split_host = urlsplit(origin).hostname
    except (LocationParseError, ValueError):
        return "the URL does not parse"
    if sent_host != host or split_host != host.strip("[]"):
        return "the URL parsers disagree about its host"
    bare = host.strip("[]")
    name = bare.removesuffix(".")
    numeric = _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2])
    if name != bare and (name in LOOPBACK_HOSTS or numeric):
        # "localhost." or "127.0.0.1." is no hosts-file name or address: the resolver asks DNS
        return "a trailing dot makes a loopback name or an address a DNS lookup"
    if name in LOOPBACK_HOSTS:
        return None if allow_loopback else _NO_LOOPBACK
    if not allow_loopback and _reaches_this_machine(name):  # (listed in allowed_domains)
        return _NO_LOOPBACK
    if scheme != "https":
        return "not https"
    domains = {d.lower().removesuffix(".") for d in allowed_domains}
    if name in domains:
        return None
    address = host.startswith("[") or _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2])
    if not address and any(d and name.endswith("." + d) for d in domains):
        return None
    return "not on the allow-list (allowed_domains)"


def _split_authority(authority: str) -> tuple[str | None, str | None]:
    """(lower-case host, port or None); the host is None when it is not plain syntax."""
    if authority.startswith("["):
        end = authority.find("]") + 1
        host, rest = authority[:end].lower(), authority[end:]
        if not end or not _IP_LITERAL.fullmatch(host) or (rest and not rest.startswith(":")):
            return None, None
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None, None
        return host, rest[1:] if rest else None
    host, colon, port = authority.partition(":")
    host = host.lower()
    labels = host.removesuffix(".").split(".")
    if len(host) > 254 or not all(_LABEL.fullmatch(label) for label in labels):
        return None, None
    return host, port if colon else None


def shown_host(url: str) -> str:
    """The host part of ``url`` fit for a message: never user info, escaped, shortened."""
    found = _ORIGIN.match(url)
    authority = found.group(2) if found else re.split(r"[/?#]", url, maxsplit=1)[0]
    _, at, host = authority.rpartition("@")
    shown = "".join(c if " " < c < "\x7f" else ascii(c)[1:-1] for c in host)
    if at:
        shown = "…@" + shown  # user info present, not shown
    return shown if len(shown) <= _SHOWN_MAX else shown[: _SHOWN_MAX - 1] + "…"


@functools.lru_cache(maxsize=64)  # pure: a process's sessions mostly share one host
def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is a loopback name or address (``127.0.0.1``, ``localhost``,
    ``::1``, or another spelling of this machine: see :func:`_reaches_this_machine`); for a
    URL that passed :func:`refusal`, so its host is plain."""
    host = urlsplit(url).hostname or ""
    return host in LOOPBACK_HOSTS or _reaches_this_machine(host)


def _reaches_this_machine(name: str) -> bool:
    """Whether the plain host ``name`` (no brackets, no trailing dot) is this machine though
    none of :data:`LOOPBACK_HOSTS`: a ``*.localhost`` name (RFC 6761: resolvers answer
    loopback), an address in 127/8 or 0/8 in any ``inet_aton`` spelling (``127.0.0.2``,
    ``127.1``, ``2130706433``, ``0x7f.1``, ``0.0.0.0``), ``::`` or an IPv4-mapped loopback.
    Only an ``allowed_domains`` entry lets such a host pass the allow-list at all."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        if ":" in name:
            v6 = ipaddress.IPv6Address(name)
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = v6.ipv4_mapped or v6
        elif _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
            ip = ipaddress.IPv4Address(socket.inet_aton(name))
        else:
            return False
    except (OSError, ValueError):  # not an address after all: a DNS name
        return False
    return ip.is_loopback or ip.is_unspecified or (ip.version == 4 and ip.packed[0] == 0)


def check_url(url: str, allowed_domains: tuple[str, ...], allow_loopback: bool) -> None:
    """Raise UnsafeRedirect (naming the host, never user info) unless ``url`` may receive
    credentials."""
    why = refusal(url, allowed_domains, allow_loopback)
    if why is not None:
        raise UnsafeRedirect(shown_host(url), why, hint=hint_for(why))


def hint_for(reason: str) -> str | None:
    """The hint of a refusal: the allow-list's own, loopback's, or how to write a plain URL."""
    if reason == _NO_LOOPBACK:  # (no domain to add: allowed_domains never lets loopback in)
        return _LOOPBACK_HINT
    if reason.startswith(("not on the allow-list", "not https", "loopback")):
        return None
    return "give a plain https://host[:port]/path URL (no user info; IDNs as xn--)"


@functools.lru_cache(maxsize=64)  # pure: a process's sessions mostly share one host
def configured_host(url: str, allowed_domains: tuple[str, ...], allow_loopback: bool) -> str:
    """``url`` without a trailing slash, or ConfigurationError saying what is wrong with the
    configured API host (not a URL, wrong scheme, user info, not on the allow-list, missing
    ``/apim``). Nothing was sent; there was no redirect."""
    example = "e.g. host='https://tradeapi.kotaksecurities.com/apim'"
    why = refusal(url, allowed_domains, allow_loopback)
    shown = shown_host(url)  # (only messages use it; the result is cached per host)
    if why is None:
        parts = urlsplit(url)
        if parts.path.rstrip("/") == "" and parts.hostname not in LOOPBACK_HOSTS:
            raise ConfigurationError(
                f"host {shown!r} has no path: the KS Trade API lives under /apim", hint=example
            )
        return url.rstrip("/")
    if why == "not an absolute http(s) URL":
        what, hint = "is not a URL (it needs https://)", example
    elif why == "not an http(s) URL":
        what, hint = "has a scheme other than https", example
    elif why == "not https":
        what = "is http: only https may carry credentials (http only on loopback)"
        hint = example
    elif why.startswith("not on the allow-list"):
        listed = ", ".join(allowed_domains) or "empty"
        what = f"is not on the allow-list (allowed_domains: {listed})"
        hint = "add its domain to allowed_domains if you trust it (CLI: --allowed-domain)"
    elif why.startswith("loopback"):
        what, hint = "is loopback, and allow_loopback is off", "set allow_loopback=True"
    else:
        what, hint = f"is not usable: {why}", hint_for(why) or example
    raise ConfigurationError(f"host {shown!r} {what}", hint=hint)
