"""``mtasts serve`` (one uvicorn worker) against nginx (one worker) serving the same policy.

nginx logs nothing (access_log off), so ours runs with --no-access-log beside it; a
second copy with its access log shows what that line per request costs.

wrk drives both over HTTPS on loopback, with keep-alive and with a new TLS
connection per request (what senders do: one fetch per policy). Needs wrk and
nginx from Debian; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mtasts.lab.ca import LabCA, Validity

BIN = Path(sys.executable).parent
OURS, NGINX, LOGGED = 28543, 28544, 28545
HOST = "mta-sts.example.com"


def wait(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


def wrk(port: int, close: bool) -> float:
    args = ["wrk", "-t1", "-c16", "-d10s", "-H", f"Host: {HOST}"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(
        [*args, f"https://127.0.0.1:{port}/.well-known/mta-sts.txt"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or "Non-2xx" in out:
        raise RuntimeError(out)
    return float(match.group(1))


def main() -> None:
    if not shutil.which("wrk") or not shutil.which("nginx"):
        print("serve_speed: needs wrk and nginx (Debian: wrk, nginx-light); skipped")
        return
    folder = Path(tempfile.mkdtemp(prefix="mtasts-bench-serve-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ca = LabCA(folder / "ca")
        (folder / "cert.pem").write_bytes(ca.issue((HOST,), Validity.VALID))
        key = folder / "ca" / "certs" / "leaf.key"
        (folder / "mtasts.toml").write_text(
            f'[[domain]]\nname = "example.com"\nmx = ["mx.example.com"]\nmode = "enforce"\nmax_age = 604800\n'
            f'cert_file = "{folder}/cert.pem"\nkey_file = "{key}"\n'
        )
        policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 604800\r\n"
        (folder / "www" / ".well-known").mkdir(parents=True)
        (folder / "www" / ".well-known" / "mta-sts.txt").write_text(policy)
        (folder / "nginx.conf").write_text(f"""worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
    uwsgi_temp_path {folder}; scgi_temp_path {folder};
    server {{
        listen 127.0.0.1:{NGINX} ssl;
        server_name {HOST};
        ssl_certificate {folder}/cert.pem;
        ssl_certificate_key {key};
        root {folder}/www;
        location = /.well-known/mta-sts.txt {{ default_type text/plain; types {{ }} }}
    }}
}}
""")
        # nginx below logs nothing (access_log off); ours is measured both ways.
        for port, log in ((OURS, "--no-access-log"), (LOGGED, "--access-log")):
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "mtasts"),
                        "serve",
                        "--config",
                        str(folder / "mtasts.toml"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--metrics-listen",
                        "none",
                        log,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        processes.append(
            subprocess.Popen(
                ["nginx", "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait(OURS)
        wait(LOGGED)
        wait(NGINX)
        rows = {
            name: (wrk(port, False), wrk(port, True))
            for name, port in (
                ("mtasts serve", OURS),
                ("  + access log", LOGGED),
                ("nginx", NGINX),
            )
        }
        print(f"{'':<16} {'keep-alive':>12} {'new TLS connection each':>26}")
        for name, (alive, fresh) in rows.items():
            print(f"{name:<16} {alive:>10,.0f}/s {fresh:>24,.0f}/s")
        ours, theirs = rows["mtasts serve"], rows["nginx"]
        print(
            f"ratio mtasts/nginx: keep-alive {ours[0] / theirs[0]:.2f}, new connections {ours[1] / theirs[1]:.2f}"
            " (target: at least 2,000 requests/s on one worker)"
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
