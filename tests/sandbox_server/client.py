"""A minimal hand-written client of the wire contract, for the sandbox's own tests.

The sandbox is exercised with plain ``requests`` over real loopback HTTP, never through the
project's client, so a mistake shared by both cannot hide.
"""

from __future__ import annotations

from typing import Any

import requests

from session_fsm.contract import (
    H_APP_ID,
    H_AUTHORIZATION,
    H_CONSUMER_KEY,
    H_IP,
    H_ONE_TIME_TOKEN,
    H_SESSION_TOKEN,
    H_USERID,
    LOGIN_USERID,
    SESSION_INIT,
    SESSION_LOGOUT,
    TWO_FA_ACCESSCODE,
)
from session_fsm.sandbox import (
    SandboxConfig,
)

CFG = SandboxConfig()
USER = CFG.accounts[0]
INIT_PATH, LOGIN_PATH = SESSION_INIT[1], LOGIN_USERID[1]
TWO_FA_PATH, LOGOUT_PATH = TWO_FA_ACCESSCODE[1], SESSION_LOGOUT[1]


class Client:
    """A minimal hand-written client of the wire contract (not the project's client)."""

    def __init__(self, url: str, config: SandboxConfig = CFG, timeout: float = 5.0) -> None:
        self.url = url
        self.config = config
        self.timeout = timeout
        self.http = requests.Session()

    def headers(self, **extra: str) -> dict[str, str]:
        base = {
            H_AUTHORIZATION: f"Bearer {self.config.access_token}",
            H_CONSUMER_KEY: self.config.consumer_key,
            H_IP: "127.0.0.1",
            H_APP_ID: "sandbox-tests",
        }
        return {**base, **extra}

    def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        return self.http.request(method, self.url + path, headers=headers, **kw)

    def init(self, userid: str = USER.userid, **kw: Any) -> requests.Response:
        return self.call("GET", INIT_PATH, self.headers(**{H_USERID: userid}), **kw)

    def login(self, password: str = USER.password, userid: str = USER.userid) -> requests.Response:
        body = {"userid": userid, "password": password}
        return self.call("POST", LOGIN_PATH, self.headers(), json=body)

    def two_fa(
        self, ott: str, code: str = USER.access_code, userid: str = USER.userid
    ) -> requests.Response:
        body = {"userid": userid, "accessCode": code}
        return self.call("POST", TWO_FA_PATH, self.headers(**{H_ONE_TIME_TOKEN: ott}), json=body)

    def logout(self, token: str, userid: str = USER.userid) -> requests.Response:
        headers = self.headers(**{H_SESSION_TOKEN: token, H_USERID: userid})
        return self.call("DELETE", LOGOUT_PATH, headers)

    def ott(self) -> str:
        resp = self.login()
        assert resp.status_code == 200, resp.text
        return str(resp.json()["Success"]["oneTimeToken"])

    def session(self) -> str:
        resp = self.two_fa(self.ott())
        assert resp.status_code == 200, resp.text
        return str(resp.json()["Success"]["sessionToken"])

    def trade(self, route: tuple[str, str], token: str, **kw: Any) -> requests.Response:
        headers = {
            H_AUTHORIZATION: f"Bearer {self.config.access_token}",
            H_CONSUMER_KEY: self.config.consumer_key,
            H_SESSION_TOKEN: token,
        }
        return self.call(route[0], route[1], headers, **kw)


def fault_of(resp: requests.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"fault"}, body
    fault: dict[str, Any] = body["fault"]
    assert set(fault) == {"code", "message", "description"}
    return fault
