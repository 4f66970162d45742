"""Typed answers and request bodies of the four session calls, named after the API's models.

Parsing is strict about types: every field the client reads is type-checked, tokens must be
non-empty header-safe visible ASCII, and any failure is a :class:`~session_fsm.errors.
MalformedAnswer` naming the call, the field and the status, never the value. It is lenient
about presence: unknown fields are kept in ``extra``, a missing optional field gets a default.

Answers are decoded by :func:`decode_answer`, which wraps every token the moment it is decoded
(``oneTimeToken``, ``sessionToken``, ``publicToken``) in a :class:`~session_fsm.secret.Secret`,
so no parsed payload, frame local or error ever holds a token in the clear.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

from .errors import MalformedAnswer
from .frozen import quick_init
from .secret import Secret

JSON = Mapping[str, Any]

#: Default cap on the size of a session call's answer body (``max_answer_bytes``).
DEFAULT_MAX_ANSWER_BYTES = 1 << 20
#: Answer fields whose values are tokens: wrapped in a Secret as soon as they are decoded.
TOKEN_KEYS = frozenset({"oneTimeToken", "sessionToken", "publicToken"})
#: A token travels in an HTTP header: visible ASCII only (no space, CR, LF or non-ASCII).
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")
_DIGITS = re.compile(r"[0-9]{1,12}")


#: :attr:`Undecodable.reason` of a body that is no JSON at all (e.g. a gateway's HTML page).
NOT_JSON = "is not JSON"


@dataclass(frozen=True)
class Undecodable:
    """What :func:`decode_answer` returns for a body that is not usable JSON, and why."""

    reason: str


def _wrap_tokens(obj: dict[str, Any]) -> dict[str, Any]:
    # (an object_hook: the decoder builds each object's dict, as it would without one; only
    # an object that holds a token key is looked at again)
    if not TOKEN_KEYS.isdisjoint(obj):
        for key in TOKEN_KEYS.intersection(obj):
            value = obj[key]
            if type(value) is str:
                obj[key] = Secret(value)
        value = None
    return obj


def decode_answer(raw: bytes) -> Any:
    """The JSON value of an answer body, tokens wrapped as Secrets; :class:`Undecodable` when
    it is not JSON, not UTF-8/16/32, nested too deeply or holds a number too long to convert.

    Never raises: the decoder's exceptions hold the whole text, so none of them is kept.
    """
    if too_deep(raw):  # refused before the decoder recurses (see MAX_DEPTH)
        return Undecodable("is nested too deeply")
    reason = NOT_JSON
    text: str | None = None
    try:
        if not isinstance(raw, (bytes, bytearray)):
            return json.loads(raw, object_hook=_wrap_tokens)
        # json.loads' own steps for bytes, with one decoder made once (json.loads makes one
        # per call when given a hook)
        if len(raw) > 1 and raw[0] in _OPENERS and raw[1]:
            encoding = "utf-8"  # what detect_encoding decides for it, without its call
        else:
            encoding = json.detect_encoding(raw)
        text = raw.decode(encoding, "surrogatepass")
        return _DECODER.decode(text)
    except RecursionError:
        reason = "is nested too deeply"
    except ValueError:
        pass
    del raw, text  # nothing left in this frame holds the body
    return Undecodable(reason)


#: The deepest nesting an answer may have (the API's answers are a few levels deep). A deeper
#: body is refused before it is decoded: decoding it would run the interpreter to its recursion
#: limit, where whatever else runs then (a finalizer the garbage collector calls, a signal
#: handler of the application) fails for want of stack.
MAX_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def too_deep(raw: bytes | str) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects more than :data:`MAX_DEPTH` deep
    (brackets inside strings do not count). Cheap for every real answer: it counts brackets,
    and only a body with more than ``MAX_DEPTH`` opening ones is scanned."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub(b"", data)):
        depth += 1 if bracket in b"[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


#: The first byte of a JSON object or array: no byte order mark starts with one, so a body
#: starting so, with a second byte that is not NUL, is UTF-8 to ``json.detect_encoding``.
_OPENERS = frozenset(b"{[")

#: The decoder of answers (its object_hook wraps tokens as they are decoded).
_DECODER = json.JSONDecoder(object_hook=_wrap_tokens)


def valid_token(text: str) -> bool:
    """Whether ``text`` can be a token: 1 to 4096 visible ASCII characters (header-safe)."""
    return _TOKEN.fullmatch(text) is not None


def unwrap(
    body: object, *, status: int, required: str | None = None, call: str = "session call"
) -> JSON:
    """Return the payload of a ``{"Success": {...}}`` (or ``success``) envelope.

    Raises MalformedAnswer when there is no envelope or the ``required`` field is missing.
    """
    if isinstance(body, Undecodable):
        _fail(call, status, "body", body.reason)
    if type(body) is not dict and not isinstance(body, Mapping):  # (decoded: a dict)
        _fail(call, status, "body", "is not a JSON object")
    payload = body.get("Success", body.get("success"))
    if type(payload) is not dict and not isinstance(payload, Mapping):
        _fail(call, status, "Success", "is missing or not an object (no Success envelope)")
    if required is not None and not payload.get(required):
        _fail(call, status, required, "is missing")
    return payload


def _fail(call: str, status: int | None, name: str, what: str) -> NoReturn:
    raise MalformedAnswer(
        f"{call} answer: field {name!r} {what}", status=status, field=name, call=call
    )


class _Fields:
    """Typed access to one JSON object of an answer; each failure names call, field, status."""

    __slots__ = ("call", "data", "prefix", "status")

    def __init__(self, data: JSON, call: str, status: int, prefix: str = "") -> None:
        self.data, self.call, self.status, self.prefix = data, call, status, prefix

    def fail(self, key: str, what: str) -> NoReturn:
        _fail(self.call, self.status, self.prefix + key, what)

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) is not str:
            self.fail(key, "must be a string")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if type(value) is not int or not low <= value <= high:
            self.fail(key, f"must be an integer within {low}..{high}")
        return value

    def epoch(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value < 1e14):
            self.fail(key, "must be a non-negative number of seconds (or milliseconds)")
        return int(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if type(value) is not list or any(type(v) is not str for v in value):
            self.fail(key, "must be a list of strings")
        return tuple(value)

    def obj(self, key: str) -> _Fields | None:
        value = self.data.get(key)
        if value is None:
            return None
        if type(value) is not dict and not isinstance(value, Mapping):
            self.fail(key, "must be an object")
        return _Fields(value, self.call, self.status, f"{self.prefix}{key}.")

    def token(self, key: str, *, required: bool) -> Secret | None:
        value = self.data.get(key)
        if value is None or (isinstance(value, (str, Secret)) and not value):
            if required:
                self.fail(key, "is missing")
            return None
        if type(value) is str:  # a payload built by hand (decode_answer gives Secrets)
            value = Secret(value)
        if not isinstance(value, Secret):
            self.fail(key, "must be a string")
        if not valid_token(value.reveal()):  # (reveal() stays in this expression)
            self.fail(key, "must be 1 to 4096 visible ASCII characters (no space, CR/LF)")
        return value


def _extra(data: JSON, known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


#: The fields each answer model reads (the rest go to its ``extra``), made once.
_INIT_FIELDS = frozenset(
    {"redirect", "encryption", "weblink", "userType", "status", "message", "userid"}
)
_LOGIN_FIELDS = frozenset({"oneTimeToken", "mpin", "biometric", "message"})
_2FA_FIELDS = frozenset(
    {"sessionToken", "userId", "clientCode", "clientName", "emailId", "phoneNo",
     "enabledSegments", "enabledProducts", "publicToken", "loginTime"}
)  # fmt: skip
_LOGOUT_FIELDS = frozenset({"message"})


@dataclass(frozen=True)
class Fault:
    """The body of a failure answer: ``{"fault": {"code", "message", "description"}}``."""

    code: int | None
    message: str = ""
    description: str = ""

    @classmethod
    def parse(cls, body: object, *, status: int = 0, call: str = "trading") -> Fault | None:
        """Return the fault in ``body``, or None when there is none (not an object, no
        ``fault``). A ``fault`` of the wrong shape (not an object, a code that is neither an
        integer nor digits, a non-string message) raises MalformedAnswer naming the field."""
        if not isinstance(body, Mapping) or body.get("fault") is None:
            return None
        fault = _Fields(body, call, status).obj("fault")
        assert fault is not None
        raw = fault.data.get("code")
        code: int | None = None
        if type(raw) is int and 0 <= raw < 1 << 53:
            code = raw
        elif type(raw) is str and _DIGITS.fullmatch(raw):
            code = int(raw)
        elif raw is not None and raw != "":
            fault.fail("code", "must be an integer")
        return cls(code=code, message=fault.text("message"), description=fault.text("description"))


@quick_init
@dataclass(frozen=True)
class Encryption:
    """``encryption`` part of the init answer."""

    type: str = "PLAIN"
    key_size: int = 0
    public_key: str = ""


@dataclass(frozen=True)
class Redirect:
    """``redirect`` part of the init answer: the API host all later calls go to."""

    host: str
    port: int | None = None


@dataclass(frozen=True)
class Weblink:
    """``weblink`` part of the init answer."""

    url: str = ""


@quick_init
@dataclass(frozen=True)
class ResSessionInit:
    """Answer of session_init."""

    CALL: ClassVar[str] = "session_init"

    redirect: Redirect | None
    encryption: Encryption
    weblink: Weblink | None
    user_type: str = ""
    status: str = ""
    message: str = ""
    userid: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON, *, status: int = 200) -> ResSessionInit:
        """Build from an unwrapped payload (MalformedAnswer on a field of the wrong type)."""
        f = _Fields(payload, cls.CALL, status)
        redirect = None
        red = f.obj("redirect")
        if red is not None:
            host, port = red.text("host"), red.integer("port", 1, 65535)
            redirect = Redirect(host=host, port=port) if host else None
        encryption = Encryption()
        enc = f.obj("encryption")
        if enc is not None:
            encryption = Encryption(
                type=enc.text("type", "PLAIN"),
                key_size=enc.integer("keySize", 0, 1 << 16) or 0,
                public_key=enc.text("publickKey") or enc.text("publicKey"),
            )
        web = f.obj("weblink")
        weblink = Weblink(url=web.text("url")) if web is not None else None
        known = _INIT_FIELDS
        return cls(
            redirect=redirect,
            encryption=encryption,
            weblink=weblink,
            user_type=f.text("userType"),
            status=f.text("status"),
            message=f.text("message"),
            userid=f.text("userid"),
            extra=_extra(payload, known),
        )


@quick_init
@dataclass(frozen=True)
class ResLogin:
    """Answer of login_with_user_id: the one-time token."""

    CALL: ClassVar[str] = "login_with_user_id"

    one_time_token: Secret
    mpin: str = ""
    biometric: str = ""
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON, *, status: int = 200) -> ResLogin:
        """Build from an unwrapped payload that holds a valid ``oneTimeToken``."""
        f = _Fields(payload, cls.CALL, status)
        token = f.token("oneTimeToken", required=True)
        assert token is not None
        known = _LOGIN_FIELDS
        return cls(
            one_time_token=token,
            mpin=f.text("mpin"),
            biometric=f.text("biometric"),
            message=f.text("message"),
            extra=_extra(payload, known),
        )


@quick_init
@dataclass(frozen=True)
class ResSession2FA:
    """Answer of generate_session2_fa: the session token and the user's profile."""

    CALL: ClassVar[str] = "generate_session2_fa"

    session_token: Secret
    user_id: str = ""
    client_code: str = ""
    client_name: str = ""
    email_id: str = field(default="", repr=False)
    phone_no: str = field(default="", repr=False)
    enabled_segments: tuple[str, ...] = ()
    enabled_products: tuple[str, ...] = ()
    public_token: Secret | None = None
    login_time: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON, *, status: int = 200) -> ResSession2FA:
        """Build from an unwrapped payload that holds a valid ``sessionToken``."""
        f = _Fields(payload, cls.CALL, status)
        token = f.token("sessionToken", required=True)
        assert token is not None
        known = _2FA_FIELDS
        return cls(
            session_token=token,
            user_id=f.text("userId"),
            client_code=f.text("clientCode"),
            client_name=f.text("clientName"),
            email_id=f.text("emailId"),
            phone_no=f.text("phoneNo"),
            enabled_segments=f.strings("enabledSegments"),
            enabled_products=f.strings("enabledProducts"),
            public_token=f.token("publicToken", required=False),
            login_time=f.epoch("loginTime"),
            extra=_extra(payload, known),
        )


@dataclass(frozen=True)
class ResLogout:
    """Answer of session_logout."""

    CALL: ClassVar[str] = "session_logout"

    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON, *, status: int = 200) -> ResLogout:
        """Build from an unwrapped payload."""
        f = _Fields(payload, cls.CALL, status)
        return cls(message=f.text("message"), extra=_extra(payload, _LOGOUT_FIELDS))


@quick_init
@dataclass(frozen=True)
class UserCredentials:
    """Body of login_with_user_id."""

    userid: str
    password: Secret

    def fields(self) -> dict[str, str | Secret]:
        """The wire body's fields, the password still a Secret (revealed when written)."""
        return {"userid": self.userid, "password": self.password}

    def to_json(self) -> dict[str, str]:
        """The wire body (reveals the password: pass straight to the request)."""
        return {"userid": self.userid, "password": self.password.reveal()}


@quick_init
@dataclass(frozen=True)
class UserDetails:
    """Body of generate_session2_fa."""

    userid: str
    access_code: Secret

    def fields(self) -> dict[str, str | Secret]:
        """The wire body's fields, the access code still a Secret (revealed when written)."""
        return {"userid": self.userid, "accessCode": self.access_code}

    def to_json(self) -> dict[str, str]:
        """The wire body (reveals the access code: pass straight to the request)."""
        return {"userid": self.userid, "accessCode": self.access_code.reveal()}
