"""session_fsm: keeps a trading bot logged in to the Kotak Securities KS Trade API.

A session is a guarded state machine (Uninitialised -> Initialised -> OTT-issued ->
Authenticated -> LoggedOut) that drives the four session calls, logs every step as a structured
event, and re-logs in by itself, once, when a request meets an expired session.

    from session_fsm import KSSession, Credentials
    with KSSession(Credentials(...), host=...) as s:
        s.connect()
        s.get("/reports/1.0/orders")
"""

from typing import TYPE_CHECKING

from .config import SessionConfig
from .core.snapshot import Snapshot, TransitionRecord
from .credentials import (
    Credentials,
    FromCallable,
    FromEnv,
    Literal,
    OneShot,
    SecretProvider,
    Totp,
)
from .errors import (
    APIError,
    AuthError,
    BadRequest,
    ConfigurationError,
    EventLoopUnavailable,
    GatewayAuthError,
    GuardFailed,
    InvalidTransition,
    KSError,
    LoginRejected,
    MalformedAnswer,
    NetworkError,
    NotAuthorized,
    NotReplayable,
    OneTimeTokenRejected,
    RateLimited,
    ReloginNeedsHuman,
    RequestTimeout,
    ServiceUnavailable,
    SessionExpired,
    TransportError,
    UnexpectedStatus,
    UnsafeRedirect,
    WrongDomain,
)
from .file_store import FileStore
from .logs import configure_logging, redact
from .redis_store import RedisStore
from .retry import RetryPolicy
from .secret import Secret
from .stores import MemoryStore, StoredSession, StoreError, TokenStore, open_store
from .sync.auth import SessionAuth
from .sync.session import KSSession
from .table import TRANSITIONS, Edge, State
from .wire import Wire, WireConfig

if TYPE_CHECKING:  # imported on first use at run time (see __getattr__); typed for checkers
    from .aio.session import AsyncKSSession

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``AsyncKSSession`` is imported on first use: it needs the ``async`` extra (aiohttp,
    httpx), which a threaded bot does not install."""
    if name == "AsyncKSSession":
        from .aio.session import AsyncKSSession

        return AsyncKSSession
    raise AttributeError(f"module 'session_fsm' has no attribute {name!r}")

__all__ = [
    "TRANSITIONS",
    "APIError",
    "AsyncKSSession",
    "AuthError",
    "BadRequest",
    "ConfigurationError",
    "Credentials",
    "Edge",
    "EventLoopUnavailable",
    "FileStore",
    "FromCallable",
    "FromEnv",
    "GatewayAuthError",
    "GuardFailed",
    "InvalidTransition",
    "KSError",
    "KSSession",
    "Literal",
    "LoginRejected",
    "MalformedAnswer",
    "MemoryStore",
    "NetworkError",
    "NotAuthorized",
    "NotReplayable",
    "OneShot",
    "OneTimeTokenRejected",
    "RateLimited",
    "RedisStore",
    "ReloginNeedsHuman",
    "RequestTimeout",
    "RetryPolicy",
    "Secret",
    "SecretProvider",
    "ServiceUnavailable",
    "SessionAuth",
    "SessionConfig",
    "SessionExpired",
    "Snapshot",
    "State",
    "StoreError",
    "StoredSession",
    "TokenStore",
    "Totp",
    "TransitionRecord",
    "TransportError",
    "UnexpectedStatus",
    "UnsafeRedirect",
    "Wire",
    "WireConfig",
    "WrongDomain",
    "__version__",
    "configure_logging",
    "open_store",
    "redact",
]
