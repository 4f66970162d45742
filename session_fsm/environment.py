"""Proxy and CA-bundle settings from the environment, read once rather than on every request.

With ``trust_env`` on (its default), ``requests`` reads the environment on every call: the proxy
variables and ``NO_PROXY`` (about 90 us a call on the benchmark machine, more than a third of
requests' own client-side time), ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, and ``~/.netrc``.
The :class:`~session_fsm.Wire`'s own ``requests.Session`` turns ``trust_env`` off and takes
those settings from an :class:`EnvironmentSettings` instead, as httpx's ``Client`` does: read
when first needed (proxies per host, the CA bundle when the HTTP session is made) and kept until
:meth:`Wire.close() <session_fsm.Wire.close>`, after which they are read again.

``~/.netrc`` is deliberately not read: for a request without ``auth=``, requests replaces the
``Authorization`` header with the Basic credentials of a matching netrc entry, which would send
the gateway a password instead of the Bearer token of every KS call.
"""

from __future__ import annotations

import os

from requests.utils import get_environ_proxies

from .secret import Secret

#: Where requests looks for a CA bundle when ``verify`` is True, in its order.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class EnvironmentSettings:
    """What requests would read from the environment per call, read once (proxies per host)."""

    def __init__(self) -> None:
        # By origin (the allow-list keeps it small). A proxy URL may carry a password: kept as
        # Secrets, since an error's frames reach the wire that holds these settings.
        self._proxies: dict[str, tuple[tuple[str, Secret], ...]] = {}
        self.ca_bundle: str | None = next(
            (v for v in map(os.environ.get, CA_BUNDLE_VARIABLES) if v), None
        )

    def verify(self, configured: bool | str) -> bool | str:
        """The ``verify`` to send: the environment's CA bundle stands in for ``True``."""
        if configured is True and self.ca_bundle:
            return self.ca_bundle
        return configured

    def proxies(self, url: str) -> dict[str, str]:
        """The environment's proxies for ``url`` (``NO_PROXY`` applied), read once per origin."""
        origin = _origin(url)
        found = self._proxies.get(origin)
        if found is None:
            found = tuple((k, Secret(v)) for k, v in get_environ_proxies(origin).items())
            self._proxies[origin] = found
        return {k: v.reveal() for k, v in found} if found else {}


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (string slicing: this runs on every request)."""
    start = url.find("://")
    end = url.find("/", start + 3 if start >= 0 else 0)
    return url if end < 0 else url[:end]
