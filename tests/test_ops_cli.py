"""Behaviour that cannot hurt an account (issue 17, section 3), through the real ``session-fsm``
against a sandbox over loopback, and through the library where the CLI is not involved.

Every command runs as a subprocess with a clean environment and its own HOME; everything any
command printed is checked for the account's secrets after each test.
"""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from session_fsm import ConfigurationError, Credentials, FileStore, KSSession, LoginRejected, State
from session_fsm.cli import _parser
from session_fsm.sandbox import Account, Sandbox, SandboxConfig, run_sandbox
from tests import redis_server
from tests.conftest import make_credentials

PASSWORD = "pw-Ops-7Yq-SECRET"
ACCESS_CODE = "ac-Ops-3Kd-SECRET"
CONSUMER_KEY = "ck-Ops-9Lm-SECRET"
BEARER = "bearer-Ops-2Pz-SECRET"
USERID = "ops-user"
SECRETS = (PASSWORD, ACCESS_CODE, CONSUMER_KEY, BEARER)
CONFIG = SandboxConfig(
    accounts=(Account(USERID, PASSWORD, ACCESS_CODE),), consumer_key=CONSUMER_KEY,
    access_token=BEARER,
)  # fmt: skip
SCRIPT = Path(sys.executable).with_name("session-fsm")
OUTPUTS: list[str] = []


@dataclass
class Run:
    rc: int
    out: str
    err: str


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox(CONFIG) as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.control.reset()
    return sandbox


@pytest.fixture(autouse=True)
def no_secret_printed() -> Iterator[None]:
    OUTPUTS.clear()
    yield
    text = "\n".join(OUTPUTS)
    for secret in SECRETS:
        assert secret not in text, f"a secret was printed: {secret}"


def env_for(sb: Sandbox, **over: str) -> dict[str, str]:
    return {
        "KS_HOST": sb.url, "KS_USERID": USERID, "KS_CONSUMER_KEY": CONSUMER_KEY,
        "KS_ACCESS_TOKEN": BEARER, "KS_PASSWORD": PASSWORD, "KS_ACCESS_CODE": ACCESS_CODE,
        **over,
    }  # fmt: skip


def cli(*args: str, env: dict[str, str], home: Path) -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    p = subprocess.run(
        [str(SCRIPT), *args], env={**base, "HOME": str(home), **env}, capture_output=True,
        text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    OUTPUTS.append(p.stdout + p.stderr)
    return Run(p.returncode, p.stdout, p.stderr)


def logins(sb: Sandbox) -> int:
    """Calls that reached the login endpoint (accepted or not)."""
    calls = sb.control.stats()["calls"]
    return sum(n for k, n in calls.items() if "login/userid" in k)


# --- the wrong-password cool-down is kept in the store -----------------------------------------


def test_two_login_runs_with_a_wrong_password_reach_the_server_once(
    sb: Sandbox, tmp_path: Path
) -> None:
    wrong = env_for(sb, KS_PASSWORD="wrong-" + PASSWORD)
    first = cli("login", env=wrong, home=tmp_path)
    assert first.rc == 1 and "LoginRejected" not in first.err  # one line, the error's words
    assert logins(sb) == 1
    second = cli("login", env=wrong, home=tmp_path)
    assert second.rc == 1, second.err
    assert logins(sb) == 1, "the second run sent the rejected password again"
    assert "cool-down" in second.err and "--reset-cooldown" in second.err
    # Once the password is fixed, --reset-cooldown lets the next run through.
    fixed = cli("login", "--reset-cooldown", env=env_for(sb), home=tmp_path)
    assert fixed.rc == 0, fixed.err
    assert logins(sb) == 2 and sb.control.stats()["logins"] == 1


def test_the_cooldown_is_shared_through_redis(sb: Sandbox, tmp_path: Path) -> None:
    from session_fsm.stores import store_key

    with redis_server.running() as server:
        wrong = env_for(sb, KS_PASSWORD="wrong-" + PASSWORD, KS_STORE=server.url)
        assert cli("login", env=wrong, home=tmp_path).rc == 1
        assert cli("login", env=wrong, home=tmp_path / "elsewhere").rc == 1  # another "host"
        assert logins(sb) == 1
        client = server.client()
        ttl = client.pttl(store_key(sb.url, USERID) + ":cooldown")
        client.close()
        assert 0 < ttl <= 300_000  # Redis drops the record when the cool-down ends


def test_a_cooldown_record_in_a_file_store_stops_a_new_process(
    sb: Sandbox, tmp_path: Path
) -> None:
    from session_fsm.stores import load_cooldown

    store = FileStore(tmp_path / "t.json")
    bad = make_credentials(userid=USERID, password="bad", access_code=ACCESS_CODE,
                           consumer_key=CONSUMER_KEY, access_token=BEARER)  # fmt: skip
    with KSSession(bad, host=sb.url, store=store, cooldown=60) as s, pytest.raises(LoginRejected):
        s.connect()
    kept = load_cooldown(store, s.store_key())
    assert kept is not None and kept.error == "LoginRejected" and kept.status == 401
    data = json.loads((tmp_path / "t.json").read_text())
    assert "bad" not in json.dumps(data)  # the record keeps no secret
    r = cli("login", "--store", f"file:{tmp_path / 't.json'}",
            env=env_for(sb, KS_PASSWORD="bad"), home=tmp_path)  # fmt: skip
    assert r.rc == 1 and logins(sb) == 1


# --- login and status check the stored session -------------------------------------------------


def test_login_checks_a_stored_session_and_logs_in_again_when_it_is_dead(
    sb: Sandbox, tmp_path: Path
) -> None:
    env = env_for(sb)
    assert cli("login", env=env, home=tmp_path).rc == 0
    live = cli("login", "--json", env=env, home=tmp_path)
    assert live.rc == 0 and json.loads(live.out)["live"] is True
    assert "checked" in json.loads(live.out)["result"]
    assert sb.control.stats()["calls"]["GET /reports/1.0/orders"] == 1
    sb.control.expire()
    dead = cli("login", env=env, home=tmp_path)
    assert dead.rc == 0 and "was dead: logged in again" in dead.out
    assert re.search(r"^  generation\s+2$", dead.out, re.M)
    assert sb.control.stats()["logins"] == 2
    unchecked = cli("login", "--no-check", env=env, home=tmp_path)
    assert unchecked.rc == 0 and "NOT checked" in unchecked.out
    assert sb.control.stats()["calls"]["GET /reports/1.0/orders"] == 3  # no new call


def test_status_check_and_exit_codes(sb: Sandbox, tmp_path: Path) -> None:
    env = env_for(sb)
    none = cli("status", "--json", env=env, home=tmp_path)
    assert none.rc == 1 and json.loads(none.out)["live"] is False
    assert cli("login", env=env, home=tmp_path).rc == 0
    stored = cli("status", "--json", env={"KS_HOST": sb.url, "KS_USERID": USERID}, home=tmp_path)
    fields = json.loads(stored.out)
    assert stored.rc == 0 and fields["live"] is None  # stored, not checked
    assert set(fields) == {"result", "state", "host", "userid", "generation", "logged_in_at",
                           "session_age_s", "store", "live"}  # fmt: skip
    checked = cli("status", "--check", "--json", env=env, home=tmp_path)
    assert checked.rc == 0 and json.loads(checked.out)["live"] is True
    sb.control.expire()
    dead = cli("status", "--check", env=env, home=tmp_path)
    assert dead.rc == 1 and "dead" in dead.out and re.search(r"^  live\s+no$", dead.out, re.M)
    assert sb.control.stats()["logins"] == 1  # status --check never logs in
    settings_error = cli("status", "--check", env={"KS_HOST": sb.url, "KS_USERID": USERID},
                         home=tmp_path)  # fmt: skip
    assert settings_error.rc == 2 and "KS_CONSUMER_KEY" in settings_error.err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_login_refuses_the_memory_store(sb: Sandbox, tmp_path: Path, how: str) -> None:
    args = ("login", "--store", "memory:") if how == "flag" else ("login",)
    env = env_for(sb, **({"KS_STORE": "memory:"} if how == "env" else {}))
    r = cli(*args, env=env, home=tmp_path)
    assert r.rc == 2 and "memory:" in r.err and len(r.err.splitlines()) == 1
    assert sum(sb.control.stats()["calls"].values()) == 0  # nothing reached the broker


# --- the library: leaving ``with`` and logging out twice ---------------------------------------


def creds() -> Credentials:
    return make_credentials(userid=USERID, password=PASSWORD, access_code=ACCESS_CODE,
                            consumer_key=CONSUMER_KEY, access_token=BEARER)  # fmt: skip


def test_leaving_with_closes_and_does_not_log_out(sb: Sandbox, tmp_path: Path) -> None:
    store = f"file:{tmp_path / 't.json'}"
    with KSSession(creds(), host=sb.url, store=store) as s:
        s.connect()
    assert sb.control.stats()["logouts"] == 0 and s.state is State.AUTHENTICATED
    again = KSSession(creds(), host=sb.url, store=store)
    assert again.resume()  # the next run (or another process) goes on with it
    again.get("/reports/1.0/orders")
    assert sb.control.stats()["logins"] == 1
    with KSSession(creds(), host=sb.url, store=store, logout_on_exit=True) as third:
        third.connect()
    assert sb.control.stats()["logouts"] == 1 and third.state is State.LOGGED_OUT


def test_second_logout_and_logout_before_login_do_not_raise(sb: Sandbox) -> None:
    s = KSSession(creds(), host=sb.url)
    s.logout()  # before any login
    s.connect()
    s.logout()
    s.logout()  # a second one
    assert sb.control.stats()["logouts"] == 1
    refused = [r for r in s.history if r.trigger == "logout" and r.outcome == "refused"]
    assert [(r.src, r.reason) for r in refused] == [
        (State.UNINITIALISED, "not logged in"), (State.LOGGED_OUT, "not logged in"),
    ]  # fmt: skip
    s.close()


# --- the command line's own manners ------------------------------------------------------------


def test_png_is_never_written_to_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        p = subprocess.run([str(SCRIPT), "diagram", "--format", "png"], stdout=follower,
                           stderr=subprocess.PIPE, timeout=60, check=False)  # fmt: skip
    finally:
        os.close(follower)
    os.set_blocking(leader, False)
    try:
        shown = os.read(leader, 65536)
    except (BlockingIOError, OSError):
        shown = b""
    os.close(leader)
    assert p.returncode == 2 and b"-o FILE" in p.stderr
    assert b"PNG" not in shown
    to_file = subprocess.run([str(SCRIPT), "diagram", "--format", "dot"], capture_output=True,
                             timeout=60, check=False)  # fmt: skip
    assert to_file.returncode == 0 and to_file.stdout.startswith(b"digraph")


def test_sandbox_names_a_port_in_use_and_rejects_one_out_of_range(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = cli("sandbox", "--port", str(port), env={}, home=tmp_path)
    assert r.rc == 2 and f"port {port}" in r.err and "in use" in r.err
    assert len(r.err.splitlines()) == 1
    for bad in ("70000", "-1", "http"):
        out = cli("sandbox", "--port", bad, env={}, home=tmp_path)
        assert out.rc == 2 and "--port" in out.err


def _actions(parser: object) -> Iterator[tuple[str, object]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for where, inner in _actions(sub):
                    yield f"{name} {where}", inner
        else:
            yield action.dest, action


def test_every_subcommand_and_argument_has_help_and_defaults_are_shown() -> None:
    import argparse

    parser = _parser()
    for where, action in _actions(parser):
        assert isinstance(action, argparse.Action)
        assert action.help and action.help != argparse.SUPPRESS, f"no help: {where}"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert name in {c.dest for c in sub._choices_actions}, f"no help line for {name}"
        text = command.format_help()
        for action in command._actions:
            default = action.default
            if default in (None, argparse.SUPPRESS) or isinstance(default, bool):
                continue
            squeezed = "".join(text.split())  # (help lines wrap, also at hyphens)
            assert f"(default:{default})" in squeezed, (name, action.dest)


@pytest.mark.parametrize(
    ("secret", "says"),
    [("JBSWY3DPEHPK3PXP", "too short"), ("not base32!", "not valid base32")],
)
def test_a_short_totp_secret_is_reported_as_too_short(secret: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as info:
        make_credentials(access_code=None, totp_secret=secret)
    assert secret not in str(info.value)


def test_cli_reports_a_short_totp_secret(sb: Sandbox, tmp_path: Path) -> None:
    env = env_for(sb, KS_TOTP_SECRET="JBSWY3DPEHPK3PXP")
    del env["KS_ACCESS_CODE"]
    r = cli("login", env=env, home=tmp_path)
    assert r.rc == 2 and "totp_secret is too short" in r.err
    assert "JBSWY3DPEHPK3PXP" not in r.err
