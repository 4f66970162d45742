"""A faithful emulator of the KS Trade API over real loopback HTTP: the session calls and every
trading endpoint of the public client, behind a small world (see docs/sandbox.md).

Start one in-process for tests::

    with run_sandbox() as sb:
        requests.get(sb.url + "/session/1.0/session/init", headers=...)
        sb.control.fault("/session/1.0/session/login/userid", status=503, retry_after=1)
        sb.control.advance(301)  # one-time tokens are now expired

or serve one until Ctrl+C with :func:`serve` (what ``session-fsm sandbox`` runs), and drive
it from another process with :class:`HttpSandboxControl`.
"""

from __future__ import annotations

from .app import INVALID_SESSION_403, QUOTES_LTP_TEMPLATE, SandboxApp, make_app
from .config import DEMO_ACCOUNT, Account, SandboxConfig, Settings
from .control import (
    CONTROL_PREFIX,
    ControlPlane,
    HttpSandboxControl,
    SandboxControl,
    SandboxControlError,
    handle_control,
)
from .faults import ApiFault, FaultSpec
from .server import Sandbox, banner, run_sandbox, serve
from .state import SandboxState, Session

__all__ = [
    "CONTROL_PREFIX",
    "DEMO_ACCOUNT",
    "INVALID_SESSION_403",
    "QUOTES_LTP_TEMPLATE",
    "Account",
    "ApiFault",
    "ControlPlane",
    "FaultSpec",
    "HttpSandboxControl",
    "Sandbox",
    "SandboxApp",
    "SandboxConfig",
    "SandboxControl",
    "SandboxControlError",
    "SandboxState",
    "Session",
    "Settings",
    "banner",
    "handle_control",
    "make_app",
    "run_sandbox",
    "serve",
]
