"""The ``session-fsm`` command line, run as a real process against a sandbox over loopback.

Every command runs in a subprocess (the console script or ``python -m session_fsm``) with a
clean environment and its own HOME, so the default token store never touches the real one.
The sandbox account uses distinctive secrets; every test greps all output for them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from session_fsm.account import shown_store
from session_fsm.cli import main
from session_fsm.sandbox import Account, Sandbox, SandboxConfig, run_sandbox
from tests import redis_server

PASSWORD = "pw-Zq8v-CLI-SECRET"
ACCESS_CODE = "ac-7x9Q-CLI-SECRET"
CONSUMER_KEY = "ck-K3y-CLI-SECRET"
BEARER = "bearer-Tq5-CLI-SECRET"
USERID = "cli-user"
SECRETS = (PASSWORD, ACCESS_CODE, CONSUMER_KEY, BEARER)
CONFIG = SandboxConfig(
    accounts=(Account(USERID, PASSWORD, ACCESS_CODE),), consumer_key=CONSUMER_KEY,
    access_token=BEARER,
)  # fmt: skip
SCRIPT = Path(sys.executable).with_name("session-fsm")
COMMANDS = ("demo", "sandbox", "login", "status", "logout", "diagram", "trace")


@dataclass
class Run:
    """One finished command: exit code and both output streams."""

    rc: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox(CONFIG) as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.control.reset()
    return sandbox


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def account_env(host: str) -> dict[str, str]:
    """A complete set of KS_* settings for the sandbox account at ``host``."""
    return {
        "KS_HOST": host, "KS_USERID": USERID, "KS_CONSUMER_KEY": CONSUMER_KEY,
        "KS_ACCESS_TOKEN": BEARER, "KS_PASSWORD": PASSWORD, "KS_ACCESS_CODE": ACCESS_CODE,
    }  # fmt: skip


@pytest.fixture
def env(sb: Sandbox, home: Path) -> dict[str, str]:
    return account_env(sb.url)


OUTPUTS: list[str] = []


@pytest.fixture(autouse=True)
def no_secret_in_any_output() -> Iterator[None]:
    """After each test: nothing any command printed holds a secret or a session token."""
    OUTPUTS.clear()
    TOKENS.clear()
    yield
    text = "\n".join(OUTPUTS)
    for secret in SECRETS:
        assert secret not in text, f"a secret was printed: {secret}"
    assert not any(t in text for t in TOKENS), "a session token was printed"


TOKENS: set[str] = set()


def cli(*args: str, env: dict[str, str], home: Path, module: bool = False) -> Run:
    """Run the command line with exactly ``env`` (plus PATH and HOME) and return the result."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    full = {**base, "HOME": str(home), "PYTHONUNBUFFERED": "1", **env}
    head = [sys.executable, "-m", "session_fsm"] if module else [str(SCRIPT)]
    p = subprocess.run(
        [*head, *args], env=full, capture_output=True, text=True, timeout=60, check=False
    )
    OUTPUTS.append(p.stdout + p.stderr)
    return Run(p.returncode, p.stdout, p.stderr)


def remember_tokens(store_file: Path) -> None:
    """Note every session token in a file store, so the output check looks for them too."""
    data = json.loads(store_file.read_text())
    TOKENS.update(s["session_token"] for s in data["sessions"].values())
    assert TOKENS


def default_store(home: Path) -> Path:
    return home / ".session_fsm" / "tokens.json"


def test_console_script_is_installed() -> None:
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e . installs the console script"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: session-fsm {command}")
    assert "--debug" in out


def test_top_level_help_and_version_via_python_m(home: Path) -> None:
    r = cli("--help", env={}, home=home, module=True)
    assert r.rc == 0
    for command in COMMANDS:
        assert command in r.out
    v = cli("--version", env={}, home=home, module=True)
    assert v.rc == 0 and v.out.startswith("session-fsm ")


def test_login_status_logout(sb: Sandbox, env: dict[str, str], home: Path) -> None:
    r = cli("login", "-v", env=env, home=home)
    assert r.rc == 0, r.err
    assert "logged in" in r.out and "Authenticated" in r.out
    assert "transition  authenticate: OTT-issued -> Authenticated" in r.err  # shown as it goes
    assert sb.control.stats()["logins"] == 1
    remember_tokens(default_store(home))
    assert default_store(home).stat().st_mode & 0o777 == 0o600

    calls = sum(sb.control.stats()["calls"].values())
    s = cli("status", env={"KS_HOST": sb.url, "KS_USERID": USERID}, home=home)
    assert s.rc == 0, s.err
    for label in ("state", "host", "userid", "generation", "session age", "logged in at"):
        assert re.search(rf"^  {label}\s", s.out, re.M), (label, s.out)
    assert "Authenticated" in s.out and sb.url in s.out and USERID in s.out
    assert re.search(r"^  generation\s+1$", s.out, re.M)
    assert sum(sb.control.stats()["calls"].values()) == calls  # status makes no HTTP call

    o = cli("logout", env=env, home=home)
    assert o.rc == 0, o.err
    assert "LoggedOut" in o.out
    assert sb.control.stats()["logouts"] == 1
    gone = cli("status", env=env, home=home)
    assert gone.rc == 1 and "no stored session" in gone.out
    again = cli("logout", env=env, home=home)
    assert again.rc == 0 and "nothing to log out" in again.out


def test_login_resumes_the_stored_session_and_fresh_logs_in_anew(
    sb: Sandbox, env: dict[str, str], home: Path
) -> None:
    assert cli("login", env=env, home=home).rc == 0
    calls = sum(sb.control.stats()["calls"].values())
    r = cli("login", env=env, home=home)
    assert r.rc == 0 and "already logged in" in r.out and "checked" in r.out
    assert sum(sb.control.stats()["calls"].values()) == calls + 1  # the one check call
    f = cli("login", "--fresh", env=env, home=home)
    assert f.rc == 0 and re.search(r"^  generation\s+2$", f.out, re.M)
    stats = sb.control.stats()
    assert (stats["logins"], stats["logouts"]) == (2, 1)
    remember_tokens(default_store(home))


def test_json_mode(sb: Sandbox, env: dict[str, str], home: Path) -> None:
    r = cli("login", "--json", "--verbose", env=env, home=home, module=True)
    assert r.rc == 0, r.err
    result = json.loads(r.out)
    assert result["state"] == "Authenticated" and result["userid"] == USERID
    assert result["host"] == sb.url and result["generation"] == 1
    events = [json.loads(line) for line in r.err.splitlines()]
    assert [e["trigger"] for e in events if e["event"] == "transition"] == [
        "init", "login", "authenticate",
    ]  # fmt: skip
    remember_tokens(default_store(home))
    s = json.loads(cli("status", "--json", env=env, home=home).out)
    assert s["state"] == "Authenticated" and s["session_age_s"] >= 0
    assert set(s) == {"result", "state", "host", "userid", "generation", "logged_in_at",
                      "session_age_s", "store", "live"}  # fmt: skip
    o = cli("logout", "--json", env=env, home=home)
    assert json.loads(o.out)["state"] == "LoggedOut"


def test_missing_settings_are_named_in_one_line(home: Path, sb: Sandbox) -> None:
    r = cli("login", env={}, home=home)
    assert r.rc == 2 and r.out == ""
    assert len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    for name in ("KS_HOST", "KS_USERID", "KS_CONSUMER_KEY", "KS_ACCESS_TOKEN", "KS_PASSWORD",
                 "KS_ACCESS_CODE or KS_TOTP_SECRET"):  # fmt: skip
        assert name in r.err
    s = cli("status", env={"KS_HOST": sb.url}, home=home)
    assert s.rc == 2 and "missing settings: KS_USERID (" in s.err
    o = cli("logout", env={"KS_HOST": sb.url, "KS_USERID": USERID}, home=home)
    assert "missing settings: KS_CONSUMER_KEY, KS_ACCESS_TOKEN (" in o.err


def test_config_file_and_store_flag(sb: Sandbox, env: dict[str, str], home: Path) -> None:
    cfg = home / "ks.env"
    cfg.write_text("# bot settings\n" + "".join(f"export {k}='{v}'\n" for k, v in env.items()))
    cfg.chmod(0o600)
    store = home / "elsewhere" / "t.json"
    r = cli("login", "--config", str(cfg), "--store", f"file:{store}", env={}, home=home)
    assert r.rc == 0, r.err
    assert store.exists() and not default_store(home).exists()
    remember_tokens(store)
    via_env = cli("status", "--config", str(cfg), env={"KS_STORE": f"file:{store}"}, home=home)
    assert via_env.rc == 0 and "Authenticated" in via_env.out and str(store) in via_env.out

    cfg.write_text("KS_PASWORD=x\n")
    bad = cli("login", "--config", str(cfg), env={}, home=home)
    assert bad.rc == 2 and "unknown setting KS_PASWORD" in bad.err
    assert len(bad.err.splitlines()) == 1


def test_errors_are_one_line_without_traceback_unless_debug(
    sb: Sandbox, env: dict[str, str], home: Path
) -> None:
    wrong = {**env, "KS_PASSWORD": "wrong-" + PASSWORD}
    r = cli("login", env=wrong, home=home)
    assert r.rc == 1 and len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    assert r.err.startswith("session-fsm login: error: ") and "password" in r.err
    d = cli("login", "--debug", env=wrong, home=home)
    assert d.rc == 1 and "Traceback" in d.err and "LoginRejected" in d.err
    bad_store = cli("status", "--store", "nowhere", env=env, home=home)
    assert bad_store.rc == 2 and len(bad_store.err.splitlines()) == 1
    bad_host = cli("status", env={**env, "KS_HOST": "https://evil.example.com/apim"}, home=home)
    assert bad_host.rc == 2 and "allow-list" in bad_host.err  # a setting to fix


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("redis://:pw-S3cret@h:6379/0", "redis://h:6379/0"),
        ("rediss://user:pw-S3cret@h/1?lock_ttl=5", "rediss://h/1"),
        ("redis://h:6379/0?password=pw-S3cret", "redis://h:6379/0"),
        ("unix:///run/redis.sock?password=pw-S3cret", "unix:///run/redis.sock"),
        ("file:/srv/tokens.json", "file:/srv/tokens.json"),
    ],
)
def test_store_urls_are_shown_without_passwords(spec: str, shown: str) -> None:
    assert shown_store(spec) == shown


def test_redis_store_url_password_is_never_printed(
    sb: Sandbox, env: dict[str, str], home: Path
) -> None:
    with redis_server.running() as server:
        client = server.client()
        client.config_set("requirepass", "rds-Pw-CLI-SECRET")
        client.close()
        url = server.url.replace("redis://", "redis://:rds-Pw-CLI-SECRET@")
        r = cli("login", "--store", url, env=env, home=home)
        assert r.rc == 0, r.err
        assert server.url in r.out
        s = cli("status", "--json", env={**env, "KS_STORE": url}, home=home)
        assert json.loads(s.out)["store"] == server.url
        assert cli("logout", "--store", url, env=env, home=home).rc == 0
    assert "rds-Pw-CLI-SECRET" not in "".join(OUTPUTS)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sandbox_command_prints_url_and_credentials_and_stops_cleanly(
    signum: int, home: Path
) -> None:
    args = [str(SCRIPT), "sandbox", "--port", "0", "--userid", USERID, "--password", PASSWORD,
            "--access-code", ACCESS_CODE, "--consumer-key", CONSUMER_KEY,
            "--access-token", BEARER]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if not line or line.startswith("Press Ctrl+C"):
                break
        text = "".join(banner)
        url = re.search(r"listening on (http://127\.0\.0\.1:(\d+)/apim)", text)
        assert url and url.group(2) != "0", text
        assert PASSWORD in text and ACCESS_CODE in text  # the sandbox's own demo credentials
        login = cli("login", env=account_env(url.group(1)), home=home)  # it really serves
        assert login.rc == 0, login.err
        remember_tokens(default_store(home))
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
        _, err = proc.communicate(timeout=5)
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _demo_secrets_absent(text: str) -> None:
    demo = SandboxConfig()
    for secret in ("demo-password", demo.access_token, demo.consumer_key):
        assert secret not in text
    assert not re.search(r"(?<![\d.])1234(?![\d.])", text), "the demo access code was printed"


def test_demo_console(home: Path) -> None:
    t0 = time.monotonic()
    r = cli("demo", env={}, home=home)
    assert r.rc == 0, r.all
    assert time.monotonic() - t0 < 20
    out = r.out
    assert "\x1b[" not in out  # no colours when not on a terminal
    for shown in (
        "transition  authenticate: OTT-issued -> Authenticated",
        "transition  session_expired: Authenticated -> Initialised",
        "request_replayed",
        "waiting 1 s before retrying",
        "retried_after=[429]",
        "transition  logout: Authenticated -> LoggedOut",
        "--session_expired--> Initialised",
    ):
        assert shown in out, shown
    assert re.search(r"^\s*AUTHENTICATED\b.*\bsession_expired x1\b.*\bINITIALISED$", out, re.M)
    assert re.search(r"^(flowchart|stateDiagram)", out, re.M)  # the mermaid block
    summary = re.search(r"^summary: (.*)$", out, re.M)
    assert summary
    fields = dict(kv.split("=", 1) for kv in summary.group(1).split())
    assert (fields["logins"], fields["relogins"], fields["retries"]) == ("2", "1", "1")
    assert fields["final_state"] == "LoggedOut"
    _demo_secrets_absent(r.all)


def test_demo_json_lines(home: Path) -> None:
    r = cli("demo", "--json", env={}, home=home, module=True)
    assert r.rc == 0, r.all
    events: list[dict[str, Any]] = [json.loads(line) for line in r.out.splitlines()]
    triggers = [e["trigger"] for e in events if e["event"] == "transition"]
    assert triggers == ["init", "login", "authenticate", "session_expired", "login",
                        "authenticate", "logout"]  # fmt: skip
    assert any(e["event"] == "request_replayed" for e in events)
    assert any(e["event"] == "retry_wait" and e["seconds"] == 1 for e in events)
    (summary,) = [e for e in events if e["event"] == "demo_summary"]
    assert (summary["logins"], summary["relogins"], summary["retries"]) == (2, 1, 1)
    assert "session_expired x1" in summary["mermaid"]
    assert summary["path"][-1] == ["Authenticated", "logout", "LoggedOut"]
    _demo_secrets_absent(r.all)


def test_status_says_when_the_stored_session_was_left_alone_for_its_host(
    sb: Sandbox, home: Path
) -> None:
    # A record under a real host's key whose own host is loopback (a foreign writer): the
    # session on the real host does not adopt it (tests/test_loopback_origin.py), and the CLI
    # says so instead of "no stored session".
    from session_fsm.file_store import FileStore
    from session_fsm.secret import Secret
    from session_fsm.stores import StoredSession, store_key

    real = "https://tradeapi.kotaksecurities.com/apim"
    token = "st-" + "e" * 32
    TOKENS.add(token)
    record = StoredSession(sb.url, USERID, Secret(token), 4, time.time())
    FileStore(str(default_store(home))).save(store_key(real, USERID), record)
    calls = sum(sb.control.stats()["calls"].values())
    s = cli("status", "-v", env={"KS_HOST": real, "KS_USERID": USERID}, home=home)
    assert s.rc == 1, s.err
    assert "the one stored has a host off this session's allow-list" in s.out
    assert "stored_session_ignored" in s.err  # -v shows the event that says why
    o = cli("logout", env=account_env(real), home=home)
    assert o.rc == 0 and "off this session's allow-list" in o.out, o.err
    assert "nothing to log out" in o.out
    assert sum(sb.control.stats()["calls"].values()) == calls  # nothing was sent anywhere
