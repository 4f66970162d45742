"""``session-fsm sandbox`` with a TOTP account, and ``session-fsm login`` with KS_TOTP_SECRET
against it: both real processes of the console script, as a bot author would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyotp
import pytest
import requests

from session_fsm.sandbox import run_sandbox

SCRIPT = Path(sys.executable).with_name("session-fsm")
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@contextmanager
def served(*args: str) -> Iterator[tuple[str, str]]:
    """Run ``session-fsm sandbox --port 0 ARGS``; yield its URL and banner; SIGTERM it."""
    proc = subprocess.Popen([str(SCRIPT), "sandbox", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or line.startswith("Press Ctrl+C"):
                break
        banner = "".join(lines)
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+/apim)", banner)
        assert url, banner
        yield url.group(1), banner
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def login(url: str, home: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    env = {**base, "HOME": str(home), "KS_HOST": url, "KS_USERID": "demo-user",
           "KS_CONSUMER_KEY": "demo-consumer-key", "KS_ACCESS_TOKEN": "demo-access-token",
           "KS_PASSWORD": "demo-password", **settings}  # fmt: skip
    return subprocess.run([str(SCRIPT), "login"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_login_with_ks_totp_secret_against_a_totp_sandbox(tmp_path: Path) -> None:
    with served("--totp-secret", SECRET) as (url, banner):
        assert f"TOTP secret {SECRET}" in banner
        assert "no static access code" in banner  # a TOTP account has no 1234 by default
        ok = login(url, tmp_path, KS_TOTP_SECRET=SECRET)
        assert ok.returncode == 0, ok.stderr
        stats = requests.get(url.replace("/apim", "/_sandbox/stats"), timeout=5).json()
        assert stats["sessions"] == 1
        wrong = login(url, tmp_path / "other", KS_TOTP_SECRET=pyotp.random_base32())
        assert wrong.returncode == 1, wrong.stderr
        assert "2FA (access code) rejected: POST /session/1.0/session/2FA/accesscode -> HTTP 401" \
            in wrong.stderr  # fmt: skip
        assert "KS_ACCESS_CODE or KS_TOTP_SECRET" in wrong.stderr
        assert "KS_PASSWORD" not in wrong.stderr  # the password was accepted
        static = login(url, tmp_path / "third", KS_ACCESS_CODE="1234")
        assert static.returncode == 1 and "HTTP 401" in static.stderr
    for run in (ok, wrong, static):
        assert SECRET not in run.stdout + run.stderr


def test_totp_secret_without_a_value_is_generated_and_printed() -> None:
    with served("--totp-secret", "--fill", "manual", "--invalid-session", "403") as (url, text):
        found = re.search(r"TOTP secret ([A-Z2-7]+)", text)
        assert found and len(found.group(1)) >= 16
        settings = requests.get(url.replace("/apim", "/_sandbox/settings"), timeout=5).json()
        assert settings == {"single_session": True, "invalid_session": 403, "fill": "manual"}
        # The same world as run_sandbox(): the same endpoints and control-plane operations.
        served_plane = requests.get(url.replace("/apim", "/_sandbox/"), timeout=5).json()
        with run_sandbox() as local:
            assert served_plane["endpoints"] == local.control.describe()["endpoints"]
            assert served_plane["operations"] == local.control.describe()["operations"]


@pytest.mark.parametrize("bad", ["not base32!", "0189"])
def test_a_bad_totp_secret_is_a_usage_error_without_the_value(bad: str) -> None:
    p = subprocess.run([str(SCRIPT), "sandbox", "--port", "0", "--totp-secret", bad],
                       capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert p.returncode == 2 and "totp_secret is not a base32 secret" in p.stderr
    assert bad not in p.stderr + p.stdout
