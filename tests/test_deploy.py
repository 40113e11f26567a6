"""``mtasts init``, ``records`` and ``history`` as an admin runs them, and the config rules."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtasts import sts, tlsrpt
from mtasts.deploy.config import DeployConfigError, load_config
from mtasts.deploy.state import DeployState
from mtasts.sts import Mode, MxPattern, Policy

from .conftest import MTASTS


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [MTASTS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_init_then_records_gives_valid_records_and_a_stable_id(tmp_path: Path) -> None:
    added = run(
        "init", "example.com", "--mx", "mx1.example.com", "--mx", "*.mail.example.com", cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr
    assert "added example.com to mtasts.toml (mode testing, max_age 86400)" in added.stdout
    first = json.loads(run("records", "--format", "json", cwd=tmp_path).stdout)[0]
    again = json.loads(run("records", "--format", "json", cwd=tmp_path).stdout)[0]
    assert first["id"] == again["id"]  # records twice: same id
    by_name = {r["name"]: r["value"] for r in first["records"]}
    assert sts.parse_record(by_name["_mta-sts.example.com"]).id == first["id"]
    assert tlsrpt.parse_record(by_name["_smtp._tls.example.com"]).mailto == ("tlsrpt@example.com",)
    policy = sts.parse_policy(first["policy"])
    assert (policy.mode, policy.max_age, [str(p) for p in policy.mx]) == (
        Mode.TESTING,
        86400,
        ["mx1.example.com", "*.mail.example.com"],
    )
    bind = run("records", "example.com", "--format", "bind", cwd=tmp_path).stdout
    assert f'_mta-sts.example.com.   300 IN TXT "v=STSv1; id={first["id"]};"' in bind


def test_changing_the_policy_changes_the_id_and_history_records_it(tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx1.example.com", cwd=tmp_path)
    old = json.loads(run("records", "--format", "json", cwd=tmp_path).stdout)[0]["id"]
    config = tmp_path / "mtasts.toml"
    config.write_text(
        config.read_text()
        .replace('mode = "testing"', 'mode = "enforce"')
        .replace("86400", "604800")
    )
    new = json.loads(run("records", "--format", "json", cwd=tmp_path).stdout)[0]["id"]
    assert new > old
    assert new.isalnum()
    shown = run("history", "example.com", cwd=tmp_path).stdout
    assert old in shown
    assert new in shown
    assert "-mode: testing" in shown
    assert "+mode: enforce" in shown


def test_two_changes_in_one_second_still_get_distinct_ids(tmp_path: Path) -> None:
    state = DeployState(tmp_path / "s.json")
    moment = dt.datetime(2026, 5, 21, 10, 15, 0, tzinfo=dt.UTC)
    one = state.policy_id(
        "example.com", Policy(Mode.TESTING, 86400, (MxPattern("mx.example.com"),)), moment
    )
    two = state.policy_id(
        "example.com", Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),)), moment
    )
    assert (one, two) == ("20260521T101500", "20260521T101501")
    assert len(DeployState(tmp_path / "s.json").history("example.com")) == 2


def test_hosting_snippets(tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    nginx = run("records", "example.com", "--nginx", cwd=tmp_path).stdout
    assert "server_name mta-sts.example.com;" in nginx
    assert "default_type text/plain;" in nginx
    caddy = run("records", "example.com", "--caddy", cwd=tmp_path).stdout
    assert (
        "respond `version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n` 200" in caddy
    )


def test_init_refuses_a_duplicate_and_bad_input(tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    again = run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    assert again.returncode == 2
    assert "already configured" in again.stderr
    bad = run("init", "example.org", "--mx", "mx*.example.org", cwd=tmp_path)
    assert bad.returncode == 2
    assert "wildcard is allowed only as the whole left-most label" in bad.stderr
    http = run(
        "init",
        "example.net",
        "--mx",
        "mx.example.net",
        "--rua",
        "http://r.example.net/",
        cwd=tmp_path,
    )
    assert http.returncode == 2
    assert "did you mean 'https://r.example.net/'" in http.stderr
    assert (
        "example.org" not in (tmp_path / "mtasts.toml").read_text()
    )  # a refused domain is not written


CONFIG_ERRORS = [
    ('mode = "strict"', "mode = 'strict' is not testing, enforce or none"),
    ("max_age = 99999999999", "max_age = 99999999999 must be whole seconds"),
    ('mx = ["MX.bücher.example"]', "write the A-label"),
    ('rua = ["http://r.example.com/"]', "did you mean 'https://r.example.com/'"),
    ("colour = 1", "unknown key(s) colour"),
    ('policy_host = { address = ["192.0.2.1"], cname = "x.example" }', "not both"),
    ('policy_host = { address = ["not-an-ip"] }', "'not-an-ip' is not an IP address"),
    ('cert_file = "a.pem"', "cert_file and key_file go together"),
    (
        "policy_host = { address = 1 }",
        "policy_host address must be an IP address or a list of them",
    ),
    ("policy_host = { cname = 7 }", "policy_host cname 7 is not a host name"),
    ('policy_host = { cname = "bad host" }', "policy_host cname 'bad host' is not a host name"),
    ('cert_file = 1\nkey_file = "k.pem"', "cert_file must be a file path"),
    ('mode = "enforce"\nmx = []', "mode enforce needs at least one mx"),
]


@pytest.mark.parametrize(("line", "message"), CONFIG_ERRORS)
def test_config_errors_name_the_file_domain_and_rule(
    tmp_path: Path, line: str, message: str
) -> None:
    config = tmp_path / "mtasts.toml"
    base = '[[domain]]\nname = "example.com"\nmx = ["mx.example.com"]\n'
    keys = {row.split(" =")[0] for row in line.splitlines()}
    kept = [x for x in base.splitlines() if x.split(" =")[0] not in keys]
    body = "\n".join(kept) + "\n" + line + "\n"
    config.write_text(body)
    with pytest.raises(DeployConfigError) as info:
        load_config(config)
    assert str(info.value).startswith(f"{config} [[domain]] #1 (example.com): ")
    assert message in str(info.value)
    result = run("records", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_mistake_of_a_domain_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "mtasts.toml").write_text(
        '[[domain]]\nname = "a.example"\nmx = ["mx.a.example."]\nmode = "enforcing"\nmax_age = -5\n'
    )
    result = run("records", cwd=tmp_path)
    assert result.returncode == 2
    where = "error: mtasts.toml [[domain]] #1 (a.example): "
    assert result.stderr.splitlines() == [
        where + "mode = 'enforcing' is not testing, enforce or none",
        where + "max_age = -5 must be whole seconds from 0 to 31557600 (RFC 8461 §3.2)",
        where + "mx = ['mx.a.example.']: ends with a dot; write 'mx.a.example'",
    ]


toml_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "[[domain]]",
                'name = "example.com"',
                'mx = ["mx.example.com"]',
                'mode = "enforce"',
                "max_age = 86400",
                'rua = ["mailto:a@example.com"]',
                "policy_host = {}",
                "domain = 1",
            ]
        ),
        st.builds(
            lambda k, v: f"{k} = {v}",
            st.sampled_from(
                ["name", "mx", "mode", "max_age", "rua", "policy_host", "cert_file", "key_file"]
            ),
            st.sampled_from(
                [
                    '""',
                    "-1",
                    "true",
                    "[]",
                    "[1]",
                    '["*"]',
                    "{address = 1}",
                    '{cname = "x"}',
                    '"http://x/"',
                    "99999999999",
                    '["bücher.example"]',
                ]
            ),
        ),
        st.text(max_size=30),
    ),
    max_size=10,
).map("\n".join)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=300), toml_lines))
def test_config_reader_raises_only_its_own_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    with contextlib.suppress(DeployConfigError):
        load_config(path)


def test_concurrent_changes_of_one_config_are_all_kept(tmp_path: Path) -> None:
    """Six max-age commands at once lost updates and 4 of 18 crashed with a traceback: the
    file was rewritten in place, without a lock."""
    import tomllib

    names = [f"d{n}.example" for n in range(6)]
    for name in names:
        run("init", name, "--mx", f"mx.{name}", cwd=tmp_path)
    env = {**os.environ, "NO_COLOR": "1", "MTASTS_DB": f"sqlite:///{tmp_path / 'r.sqlite'}"}
    for seconds in (3600, 7200, 10800):
        processes = [
            subprocess.Popen(
                [MTASTS, "max-age", name, str(seconds)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        ]
        results = [p.communicate(timeout=120) for p in processes]
        assert all(p.returncode == 0 for p in processes), results
        assert not any("Traceback" in err for _, err in results)
        config = tomllib.loads((tmp_path / "mtasts.toml").read_text())
        assert {d["name"]: d["max_age"] for d in config["domain"]} == dict.fromkeys(names, seconds)
    state = json.loads((tmp_path / "mtasts.state.json").read_text())
    # init's entry (no id), then the three max-age changes, none lost.
    assert all(
        [bool(c["policy_id"]) for c in state["domains"][name]["history"]]
        == [False, True, True, True]
        for name in names
    )


def test_records_are_never_cut_and_the_policy_can_be_saved_alone(tmp_path: Path) -> None:
    """At 60 columns the table cut the TXT value to 'rua=mailto:tlsrpt@examp…': a wrong record."""
    run(
        "init",
        "a-rather-long-domain-name.example",
        "--mx",
        "mx.a-rather-long-domain-name.example",
        cwd=tmp_path,
    )
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "60"}
    shown = subprocess.run(
        [MTASTS, "records"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert "v=TLSRPTv1; rua=mailto:tlsrpt@a-rather-long-domain-name.example;" in shown.stdout
    assert "…" not in shown.stdout
    policy = subprocess.run(
        [MTASTS, "records", "--policy"], capture_output=True, cwd=tmp_path, timeout=60
    )
    assert policy.stdout == (
        b"version: STSv1\r\nmode: testing\r\nmx: mx.a-rather-long-domain-name.example\r\nmax_age: 86400\r\n"
    )
    both = run("records", "--nginx", "--format", "json", cwd=tmp_path)
    assert both.returncode == 2
    assert "--nginx and --format json cannot go together" in both.stderr


def test_durations_read_as_people_write_them(tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx.example.com", "--max-age", "1d", cwd=tmp_path)
    assert "max_age = 86400" in (tmp_path / "mtasts.toml").read_text()
    env = {"MTASTS_DB": f"sqlite:///{tmp_path / 'r.sqlite'}"}
    done = subprocess.run(
        [MTASTS, "max-age", "example.com", "2w"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "max_age = 1209600" in (tmp_path / "mtasts.toml").read_text()
    wrong = run("max-age", "example.com", "2y", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "'2y': use seconds or a number with s, m, h, d or w (2w)" in wrong.stderr
    too_long = run("max-age", "example.com", "60w", cwd=tmp_path)
    assert "over RFC 8461's one year (31557600)" in too_long.stderr
