"""The KS Trade API wire contract as named constants: hosts, paths, header names, fault codes.

The client (``wire``) and the sandbox (``sandbox``) both read these, so the twin and the
client cannot drift apart on a path or a header spelling.
"""

from __future__ import annotations

from typing import Final

PRODUCTION_HOST: Final = "https://tradeapi.kotaksecurities.com/apim"
SANDBOX_HOST: Final = "https://sbx.kotaksecurities.com/apim"
#: Domain suffix every non-loopback redirect host must end with, by default.
KS_DOMAIN: Final = "kotaksecurities.com"

# The four session calls: (method, path).
SESSION_INIT: Final = ("GET", "/session/1.0/session/init")
LOGIN_USERID: Final = ("POST", "/session/1.0/session/login/userid")
TWO_FA_ACCESSCODE: Final = ("POST", "/session/1.0/session/2FA/accesscode")
SESSION_LOGOUT: Final = ("DELETE", "/session/1.0/session/logout")

# Trading endpoints the sandbox serves (all need a live session token).
ORDERS_REPORT: Final = ("GET", "/reports/1.0/orders")
POSITIONS_TODAY: Final = ("GET", "/positions/1.0/positions/todays")
ORDER_NORMAL: Final = ("POST", "/orders/1.0/order/normal")
#: ``{tokens}`` is a path parameter (instrument tokens joined by ``-``).
QUOTES_LTP_PREFIX: Final = "/quotes/v1.0/ltp/instruments/"

# Custom header names, case exactly as the API spells them.
H_USERID: Final = "userid"
H_CONSUMER_KEY: Final = "consumerKey"
H_IP: Final = "ip"
H_APP_ID: Final = "appId"
H_ONE_TIME_TOKEN: Final = "oneTimeToken"
H_SESSION_TOKEN: Final = "sessionToken"
H_AUTHORIZATION: Final = "Authorization"

# Fault codes seen in the wild.
FAULT_GATEWAY_TOKEN: Final = 900901  # Bearer token invalid or expired
FAULT_SESSION_EXPIRED: Final = 99999  # "You have been logged out. Login again"
FAULT_OTT_INVALID: Final = 50001  # one-time token expired or wrong
FAULT_WRONG_DOMAIN: Final = 999024  # user belongs to another API host
FAULT_NOT_AUTHORIZED: Final = 999003  # user may not use this platform
#: What a trading call's 403 says when the session is gone ("Invalid session, please re-login
#: to continue", per the generated API docs): matched case-insensitively in its fault text.
INVALID_SESSION_TEXT: Final = "invalid session"
#: Codes the sandbox uses where the real service's code is unknown.
FAULT_BAD_REQUEST: Final = 400001  # missing or invalid header/body
FAULT_WRONG_PASSWORD: Final = 401001  # wrong userid or password
FAULT_WRONG_ACCESS_CODE: Final = 401002  # wrong access code
FAULT_RATE_LIMITED: Final = 429001
FAULT_INTERNAL: Final = 500001
