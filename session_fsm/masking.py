"""Credentials masked out of any URL before it is printed or put in an error.

:func:`mask_url` works on the text, not on a parse: a misspelled scheme (``rediss:/h?password=``),
a backslash, a bad port or no scheme at all must not let a password through, and masking must
never raise. It errs on the side of masking: anything between the scheme and the last ``@`` is
treated as userinfo.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

#: What replaces a masked part.
MASK = "***"
#: Query (or fragment) parameter names that carry a credential, matched case-insensitively as
#: parts of the (percent-decoded) name: ``password``, ``access_token``, ``X-Api-Key``, ...
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|key|auth|cred|sig|code|session|otp|bearer", re.IGNORECASE
)
#: A scheme such as ``redis:`` or ``https:`` (RFC 3986: a letter, then letters, digits, + - .).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
#: One ``name=value`` parameter of a query or fragment, after its separator.
_PARAM = re.compile(r"([?&;#])([^=&;#?]*)=([^&;#]*)")


def mask_url(url: object) -> str:
    """``url`` as text with its userinfo and credential-like query values masked.

    ``https://u:pw@h/p?token=t&x=1`` becomes ``https://***@h/p?token=***&x=1``. Takes
    anything (a non-string is shown by its type name only) and never raises.
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    if start == 0 or url[start : start + 1] not in ("/", "\\"):
        start = 0  # no ``scheme:/``: ``user:pw@host`` is all userinfo
    while start < len(url) and url[start] in "/\\":
        start += 1  # past the slashes (also a misspelled ``:/`` or ``:\\``)
    hidden = bytearray(len(url))  # 1 where a character is masked
    # The userinfo ends at the last "@" anywhere: a password may hold "/", "?" or "#", and a
    # parser that stops at those would show the rest. When unsure, mask more.
    at = url.rfind("@")
    if at >= start:
        hidden[start:at] = b"\x01" * (at - start)
    # Credential-like parameters, searched from the first "?" or "#" anywhere (also inside
    # what was taken for userinfo: the two masks are joined, so neither can undo the other).
    first = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    if first >= 0:
        for i in range(first, len(url)):  # at every separator: matches may overlap
            m = _PARAM.match(url, i) if url[i] in "?&;#" else None
            if m and m.group(3) and _SECRET_NAME.search(unquote(m.group(2))):
                hidden[m.start(3) : m.end(3)] = b"\x01" * (m.end(3) - m.start(3))
    out: list[str] = []
    i = 0
    while i < len(url):
        if hidden[i]:
            while i < len(url) and hidden[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(url[i])
            i += 1
    return "".join(out)
