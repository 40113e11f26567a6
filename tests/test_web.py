"""The dashboard, driven in Debian's Chromium (Playwright, the system browser) against the real
server: log in, follow a failure from the overview to its reports and to the live check,
filter, export, retry the quarantine; hostile report content never runs; auth holds."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DROP_ALL, MTASTS, RunningLab, port

PASSWORD = "correct horse battery staple"
DOMAIN = "load-balancer.example"
ARTIFACTS = Path(
    os.environ.get("MTASTS_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)
HOSTILE_ORG = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def hostile_report() -> bytes:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    return json.dumps(
        {
            "organization-name": HOSTILE_ORG,
            "date-range": {
                "start-datetime": f"{day}T00:00:00Z",
                "end-datetime": f"{day}T23:59:59Z",
            },
            "contact-info": '=HYPERLINK("http://evil.example","x")',
            "report-id": '"><svg onload="window.__pwned=3">',
            "policies": [
                {
                    "policy": {"policy-type": "sts", "policy-domain": DOMAIN},
                    "summary": {
                        "total-successful-session-count": 1,
                        "total-failure-session-count": 2,
                    },
                    "failure-details": [
                        {
                            "result-type": "validation-failure",
                            "receiving-mx-hostname": "<b>mx</b>.evil.example",
                            "failed-session-count": 2,
                            "failure-reason-code": "@SUM(1+1)",
                        }
                    ],
                }
            ],
        }
    ).encode()


def cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MTASTS, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "MTASTS_DB": f"sqlite:///{cwd / 'store.sqlite'}"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, lab: RunningLab) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("web")
    assert (
        cli(
            "lab", "reports", "--state-dir", str(lab.state_dir), "--out", "mail", cwd=folder
        ).returncode
        == 0
    )
    # DKIM verified against the lab's DNS, as a real deployment verifies against the internet's
    ingest = cli("reports", "ingest", "mail", "--nameserver", lab.state["nameserver"], cwd=folder)
    assert ingest.returncode == 0, ingest.stderr
    (folder / "hostile.json").write_text(hostile_report().decode())
    assert cli("reports", "ingest", "hostile.json", cwd=folder).returncode == 0
    # A report over a small limit waits in the quarantine; a retry at the default limit frees it.
    big = json.loads(hostile_report())
    big["organization-name"] = "Big Sender"
    big["report-id"] = "big-1"
    big["contact-info"] = "x" * 3000
    (folder / "big.json").write_text(json.dumps(big))
    held = cli("reports", "ingest", "--max-report-size", "1K", "big.json", cwd=folder)
    assert "quarantined 1" in held.stdout, held.stdout + held.stderr
    init = cli("init", DOMAIN, "--mx", f"mx.{DOMAIN}", cwd=folder)
    assert init.returncode == 0, init.stderr
    with (folder / "mtasts.toml").open("a") as config:
        config.write(f'\n[watch]\nlab = "{lab.state_dir}"\ntimeout = 3\n')
    watched = cli("watch", "once", cwd=folder)
    assert watched.returncode in (0, 1), watched.stderr
    passwd = cli(
        "web",
        "passwd",
        "admin",
        "--file",
        "web.passwd",
        "--password-stdin",
        cwd=folder,
        stdin=PASSWORD + "\n",
    )
    assert passwd.returncode == 0, passwd.stderr
    assert oct((folder / "web.passwd").stat().st_mode & 0o777) == "0o600"
    listen = port(45)
    server = subprocess.Popen(
        [MTASTS, "web", "--port", str(listen), "--passwords", "web.passwd"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MTASTS_DB": f"sqlite:///{folder / 'store.sqlite'}"},
    )
    base = f"http://127.0.0.1:{listen}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/login", timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    server.stderr.read().decode() if server.stderr else "no server"
                ) from None
            time.sleep(0.2)
    yield {"base": base, "folder": folder, "lab": lab}
    server.terminate()
    server.wait(10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(
    url: str, data: dict[str, str] | None = None, cookie: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Cookie": cookie} if cookie else {})
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def login_cookie(base: str, user: str = "admin", password: str = PASSWORD) -> str:
    status, headers, _ = fetch(f"{base}/login", {"user": user, "password": password, "next": "/"})
    assert status == 303
    return headers["set-cookie"].split(";", 1)[0]


def test_nothing_without_a_session_and_no_post_without_its_csrf_token(site: dict[str, Any]) -> None:
    base = site["base"]
    for path in ("/", f"/domain/{DOMAIN}", "/reports", "/report/1", "/quarantine", "/partners"):
        status, headers, _ = fetch(base + path)
        assert status == 303, path
        assert headers["location"].startswith("/login?next=")
    for path in (
        "/?format=csv",
        f"/domain/{DOMAIN}?table=senders&format=csv",
        "/reports?format=json",
    ):
        assert fetch(base + path)[0] == 401, path
    assert fetch(f"{base}/quarantine/retry", {"csrf": "x"})[0] == 401
    cookie = login_cookie(base)
    status, headers, page = fetch(f"{base}/", cookie=cookie)
    assert status == 200
    assert DOMAIN.encode() in page
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert fetch(f"{base}/quarantine/retry", {}, cookie)[0] == 403
    assert fetch(f"{base}/quarantine/retry", {"csrf": "forged"}, cookie)[0] == 403
    # An open redirect after login is refused: `next` must be a path on this site.
    status, headers, _ = fetch(
        f"{base}/login", {"user": "admin", "password": PASSWORD, "next": "//evil.example/"}
    )
    assert headers["location"] == "/"


def test_repeated_wrong_passwords_are_slowed(site: dict[str, Any]) -> None:
    base = site["base"]
    waits = []
    for _ in range(5):
        status, headers, _ = fetch(
            f"{base}/login", {"user": "admin", "password": "wrong password!"}
        )
        assert status == 401
        waits.append(int(headers.get("retry-after", "0")))
    assert waits[:3] == [0, 0, 0]
    assert waits[3] >= 1
    assert waits[4] > waits[3]


def test_the_dashboard_refuses_other_addresses_without_auth(tmp_path: Path) -> None:
    done = cli("web", "--host", "0.0.0.0", "--port", str(port(46)), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--passwords" in done.stderr


def test_csv_exports_are_the_summary_numbers_and_neutralised(site: dict[str, Any]) -> None:
    base, folder = site["base"], site["folder"]
    cookie = login_cookie(base)
    since = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)).isoformat()
    _, headers, body = fetch(
        f"{base}/domain/{DOMAIN}?since={since}&table=days&format=csv", cookie=cookie
    )
    assert headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    summary = json.loads(
        cli("reports", "summary", "--domain", DOMAIN, "--since", since, "--json", cwd=folder).stdout
    )
    cli_rows = (
        summary if isinstance(summary, list) else summary.get("rows", summary.get("summary", []))
    )
    totals = lambda items, key: sum(int(i[key]) for i in items)  # noqa: E731
    assert totals(rows, "successful") == totals(cli_rows, "successful")
    assert totals(rows, "failed") == totals(cli_rows, "failed")
    _, _, body = fetch(
        f"{base}/reports?domain={DOMAIN}&type=validation-failure&format=csv", cookie=cookie
    )
    (hostile,) = list(csv.DictReader(io.StringIO(body.decode())))
    assert hostile["organization"].startswith("<script>")  # text, kept as sent
    _, _, body = fetch(
        f"{base}/domain/{DOMAIN}?table=failures&type=validation-failure&format=csv", cookie=cookie
    )
    (failure,) = list(csv.DictReader(io.StringIO(body.decode())))
    assert failure["receiving_mx"] == "<b>mx</b>.evil.example"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


class Watched:
    """Console errors, failed requests, dialogs and error responses of one page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("requestfailed", self._failed)
        page.on(
            "response",
            lambda r: self.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        page.on("dialog", lambda d: (self.problems.append(f"dialog {d.message}"), d.dismiss()))

    def _failed(self, request: Any) -> None:
        # A download ends its navigation with ERR_ABORTED: that is the download, not a failure.
        if "format=" in request.url and request.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"failed request {request.url}: {request.failure}")


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_a_failure_is_followed_from_the_overview_to_its_reports_and_its_check(
    site: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    watched = Watched(page)
    base = site["base"]
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")
    page.fill("input[name=user]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    shot(page, "overview")
    row = page.locator("table.overview tr", has_text=DOMAIN)
    assert "NOT READY" in row.inner_text()
    page.select_option("select[name=days]", "7")
    page.click(".filters button[type=submit]")
    page.wait_for_url(f"{base}/?days=7")
    assert "last 7 days" in page.locator("h1").inner_text()
    assert "NOT READY" in page.locator("table.overview tr", has_text=DOMAIN).inner_text()
    row = page.locator("table.overview tr", has_text=DOMAIN)
    row.locator(f"a[href='/domain/{DOMAIN}']").click()
    page.wait_for_url(f"{base}/domain/{DOMAIN}")
    assert page.locator("svg.chart rect").count() > 10
    shot(page, "domain")

    mismatch = page.locator("table.failures tr", has_text="certificate-host-mismatch").first
    mismatch.locator("a.reports-link").click()
    page.wait_for_url(f"{base}/reports?*")
    listed = page.locator("table.reports tbody tr")
    assert listed.count() >= 5
    listed.first.locator("a").first.click()
    page.wait_for_url(f"{base}/report/*")
    assert '"result-type": "certificate-host-mismatch"' in page.locator("pre.raw").inner_text()
    shot(page, "report")

    page.go_back()
    page.go_back()
    page.locator("table.failures a.check-link").first.click()
    page.wait_for_url(f"{base}/domain/{DOMAIN}/check#addr-*")
    address = page.url.rsplit("#addr-", 1)[1]
    broken = page.locator(f"tr[id='addr-{address}']")
    assert "certificate-host-mismatch" in broken.inner_text()  # still broken, live
    shot(page, "check")

    # Filter the report list by sender; export what is shown.
    page.goto(f"{base}/reports?domain={DOMAIN}")
    page.fill("input[name=sender]", "google.com")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**sender=google.com**")
    senders = {r.inner_text().split("\t")[1] for r in page.locator("table.reports tbody tr").all()}
    assert senders == {"google.com"}
    with page.expect_download() as download:
        page.click("text=CSV")
    exported = Path(download.value.path()).read_text()
    assert exported.splitlines()[0].startswith("id,submitter,organization")
    assert all(",google.com," in line for line in exported.splitlines()[1:])

    page.goto(f"{base}/partners")
    assert page.locator("h1").inner_text() == "Partners"
    page.goto(f"{base}/domain/{DOMAIN}")
    page.locator("table.failures a", has_text="certificate-host-mismatch").first.click()
    page.wait_for_url(f"{base}/explain/certificate-host-mismatch")
    assert "RFC 8461" in page.locator("main").inner_text()

    page.goto(f"{base}/quarantine")
    assert (
        "report.too-large" in page.locator("table").inner_text()
        or "too large" in page.locator("table").inner_text()
    )
    page.click("text=Retry all with the current parser")
    page.wait_for_url(f"{base}/quarantine?released=1")
    assert "The quarantine is empty." in page.content()
    assert watched.problems == []
    page.close()


def test_hostile_report_content_is_shown_as_text_and_never_runs(
    site: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    watched = Watched(page)
    base = site["base"]
    page.goto(f"{base}/login")
    page.fill("input[name=user]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")  # let the login's redirect finish before going elsewhere
    page.goto(f"{base}/reports?domain={DOMAIN}&type=validation-failure")
    link = page.locator("table.reports tbody tr", has_text="window.__pwned=1").locator("a").first
    link.click()
    page.wait_for_url(f"{base}/report/*")
    assert HOSTILE_ORG in page.locator("h1").inner_text()  # shown as the text it is
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main svg[onload], main b").count() == 0
    for path in (f"/domain/{DOMAIN}?type=validation-failure", "/", f"/reports?domain={DOMAIN}"):
        page.goto(base + path)
        assert page.evaluate("window.__pwned") is None
    shot(page, "hostile-report")
    assert watched.problems == []
    page.close()


def test_every_page_reads_with_a_read_only_postgresql_role(
    postgres_url: str, tmp_path: Path
) -> None:
    import psycopg

    from mtasts.reports.store import open_store

    owner = open_store(postgres_url)
    report = json.loads(hostile_report())
    report["organization-name"] = "Reader Test"
    assert owner.ingest(json.dumps(report).encode(), "reader.json").outcome == "stored"
    reader = postgres_url.replace("postgres@", "mtasts_reader@", 1)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS mtasts_reader")
        conn.execute("CREATE ROLE mtasts_reader LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO mtasts_reader")
    listen = port(47)
    server = subprocess.Popen(
        [MTASTS, "web", "--port", str(listen), "--db", reader, "--read-only"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, _ = fetch(f"{base}/")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        cookie = headers["set-cookie"].split(";", 1)[0]
        with owner.engine.connect() as connection:
            report_id = connection.exec_driver_sql("SELECT max(id) FROM reports").scalar()
        for path in (
            "/",
            f"/domain/{DOMAIN}",
            "/reports",
            f"/report/{report_id}",
            "/partners",
            "/quarantine",
        ):
            status, _, page = fetch(base + path, cookie=cookie)
            assert status == 200, (path, page[:300])
        status, _, page = fetch(f"{base}/quarantine", cookie=cookie)
        assert b"Retry all" not in page  # the action that writes is not offered
        assert fetch(f"{base}/reports?format=csv", cookie=cookie)[2].count(b"reader test") == 1
    finally:
        server.terminate()
        server.wait(10)
        owner.engine.dispose()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(DROP_ALL)
            conn.execute("DROP ROLE IF EXISTS mtasts_reader")


def test_a_user_header_counts_only_from_the_trusted_proxy(tmp_path: Path) -> None:
    listen = port(48)
    server = subprocess.Popen(
        [
            MTASTS,
            "web",
            "--port",
            str(listen),
            "--db",
            f"sqlite:///{tmp_path / 's.sqlite'}",
            "--user-header",
            "X-Remote-User",
            "--trusted-proxy",
            "127.0.0.2/32",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = fetch(f"http://127.0.0.1:{listen}/")
                break
            except OSError:
                assert server.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.2)
        # 127.0.0.1 is not the trusted proxy: its header is ignored, and nobody is logged in
        opener = urllib.request.build_opener(NoRedirect)
        request = urllib.request.Request(
            f"http://127.0.0.1:{listen}/", headers={"X-Remote-User": "mallory"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=10)
        assert refused.value.code == 401
        assert status == 401
        # from the proxy's address (127.0.0.2), the header is the user
        import http.client

        proxy = http.client.HTTPConnection(
            "127.0.0.1", listen, timeout=10, source_address=("127.0.0.2", 0)
        )
        proxy.request("GET", "/", headers={"X-Remote-User": "alice"})
        answer = proxy.getresponse()
        assert answer.status == 200
        assert "HttpOnly" in (answer.getheader("set-cookie") or "")  # carries the CSRF token
        assert b"Overview" in answer.read()
        proxy.close()
    finally:
        server.terminate()
        server.wait(10)
    done = cli("web", "--user-header", "X-Remote-User", cwd=tmp_path)
    assert done.returncode == 2
    assert "--trusted-proxy" in done.stderr
