"""Typed answers and request bodies of the four session calls, named after the API's models.

Parsing is strict about what the client needs (a missing ``oneTimeToken`` is a
:class:`~session_fsm.errors.MalformedAnswer` naming the field) and lenient about everything
else: unknown fields are kept in ``extra``, a missing optional field gets a default.
Tokens are held as :class:`~session_fsm.secret.Secret`, so no ``repr`` shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MalformedAnswer
from .secret import Secret

JSON = Mapping[str, Any]


def unwrap(body: object, *, status: int, required: str | None = None) -> JSON:
    """Return the payload of a ``{"Success": {...}}`` (or ``success``) envelope.

    Raises MalformedAnswer when there is no envelope or the ``required`` field is missing.
    """
    if not isinstance(body, Mapping):
        raise MalformedAnswer("answer is not a JSON object", status=status)
    payload = body.get("Success", body.get("success"))
    if not isinstance(payload, Mapping):
        raise MalformedAnswer("answer has no Success envelope", status=status)
    if required is not None and not payload.get(required):
        raise MalformedAnswer(
            f"answer lacks required field {required!r}", status=status, field=required
        )
    return payload


def _str(data: JSON, key: str, default: str = "") -> str:
    value = data.get(key, default)
    return default if value is None else str(value)


def _extra(data: JSON, known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass(frozen=True)
class Fault:
    """The body of a failure answer: ``{"fault": {"code", "message", "description"}}``."""

    code: int | None
    message: str = ""
    description: str = ""

    @classmethod
    def parse(cls, body: object) -> Fault | None:
        """Return the fault in ``body``, or None when there is none."""
        if not isinstance(body, Mapping):
            return None
        fault = body.get("fault")
        if not isinstance(fault, Mapping):
            return None
        raw = fault.get("code")
        try:
            code: int | None = int(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            code = None
        return cls(
            code=code, message=_str(fault, "message"), description=_str(fault, "description")
        )


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


@dataclass(frozen=True)
class ResSessionInit:
    """Answer of session_init."""

    redirect: Redirect | None
    encryption: Encryption
    weblink: Weblink | None
    user_type: str = ""
    status: str = ""
    message: str = ""
    userid: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON) -> ResSessionInit:
        """Build from an unwrapped payload."""
        red = payload.get("redirect")
        redirect = None
        if isinstance(red, Mapping) and red.get("host"):
            port = red.get("port")
            redirect = Redirect(host=str(red["host"]), port=int(port) if port else None)
        enc = payload.get("encryption")
        encryption = Encryption()
        if isinstance(enc, Mapping):
            encryption = Encryption(
                type=_str(enc, "type", "PLAIN"),
                key_size=int(enc.get("keySize") or 0),
                public_key=_str(enc, "publickKey", _str(enc, "publicKey")),
            )
        web = payload.get("weblink")
        weblink = Weblink(url=_str(web, "url")) if isinstance(web, Mapping) else None
        known = {"redirect", "encryption", "weblink", "userType", "status", "message", "userid"}
        return cls(
            redirect=redirect,
            encryption=encryption,
            weblink=weblink,
            user_type=_str(payload, "userType"),
            status=_str(payload, "status"),
            message=_str(payload, "message"),
            userid=_str(payload, "userid"),
            extra=_extra(payload, known),
        )


@dataclass(frozen=True)
class ResLogin:
    """Answer of login_with_user_id: the one-time token."""

    one_time_token: Secret
    mpin: str = ""
    biometric: str = ""
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON) -> ResLogin:
        """Build from an unwrapped payload that holds ``oneTimeToken``."""
        known = {"oneTimeToken", "mpin", "biometric", "message"}
        return cls(
            one_time_token=Secret(str(payload["oneTimeToken"])),
            mpin=_str(payload, "mpin"),
            biometric=_str(payload, "biometric"),
            message=_str(payload, "message"),
            extra=_extra(payload, known),
        )


@dataclass(frozen=True)
class ResSession2FA:
    """Answer of generate_session2_fa: the session token and the user's profile."""

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
    def parse(cls, payload: JSON) -> ResSession2FA:
        """Build from an unwrapped payload that holds ``sessionToken``."""
        known = {
            "sessionToken", "userId", "clientCode", "clientName", "emailId", "phoneNo",
            "enabledSegments", "enabledProducts", "publicToken", "loginTime",
        }  # fmt: skip
        public = payload.get("publicToken")
        login_time = payload.get("loginTime")
        return cls(
            session_token=Secret(str(payload["sessionToken"])),
            user_id=_str(payload, "userId"),
            client_code=_str(payload, "clientCode"),
            client_name=_str(payload, "clientName"),
            email_id=_str(payload, "emailId"),
            phone_no=_str(payload, "phoneNo"),
            enabled_segments=tuple(map(str, payload.get("enabledSegments") or ())),
            enabled_products=tuple(map(str, payload.get("enabledProducts") or ())),
            public_token=Secret(str(public)) if public else None,
            login_time=int(login_time) if isinstance(login_time, (int, float)) else None,
            extra=_extra(payload, known),
        )


@dataclass(frozen=True)
class ResLogout:
    """Answer of session_logout."""

    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, payload: JSON) -> ResLogout:
        """Build from an unwrapped payload."""
        return cls(message=_str(payload, "message"), extra=_extra(payload, {"message"}))


@dataclass(frozen=True)
class UserCredentials:
    """Body of login_with_user_id."""

    userid: str
    password: Secret

    def to_json(self) -> dict[str, str]:
        """The wire body (reveals the password: pass straight to the request)."""
        return {"userid": self.userid, "password": self.password.reveal()}


@dataclass(frozen=True)
class UserDetails:
    """Body of generate_session2_fa."""

    userid: str
    access_code: Secret

    def to_json(self) -> dict[str, str]:
        """The wire body (reveals the access code: pass straight to the request)."""
        return {"userid": self.userid, "accessCode": self.access_code.reveal()}
