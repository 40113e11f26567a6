"""Hostile servers and odd input: the fetcher and the probe turn anything into facts, never exceptions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtasts.lab.scenario import ScenarioError, parse_scenario
from mtasts.net.dns import Nameserver
from mtasts.net.smtp import probe_mx

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve_once(handler: Handler, run: Callable[[int], Awaitable[object]]) -> object:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await run(port)
    finally:
        server.close()
        await server.wait_closed()


def _replying(data: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.write(data)
            await writer.drain()
            await asyncio.wait_for(reader.read(4096), 0.2)
        writer.close()

    return handler


smtp_like = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [
                b"220 mx ESMTP\r\n",
                b"250-mx\r\n",
                b"250-STARTTLS\r\n",
                b"250 OK\r\n",
                b"220 go\r\n",
                b"421 bye\r\n",
                b"25",
                b"\r\n",
                b"\xff\xfe",
                b"250 STARTTLS\r\n",
            ]
        ),
        max_size=8,
    ).map(b"".join),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(smtp_like)
def test_probe_survives_any_server_bytes(data: bytes) -> None:
    async def run(port: int) -> object:
        return await probe_mx("mx.example", "127.0.0.1", port=port, timeout=1)

    probe = asyncio.run(_serve_once(_replying(data), run))
    assert probe.connected  # type: ignore[attr-defined]
    # It either finished cleanly (no STARTTLS) or names what went wrong.
    assert probe.starttls is False or probe.error_kind is not None or probe.trust is not None  # type: ignore[attr-defined]


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_scenario_parser_raises_only_scenario_error(text: str) -> None:
    with contextlib.suppress(ScenarioError):
        parse_scenario(text, "fuzz.toml")


scenario_values = st.one_of(
    st.integers(),
    st.text(max_size=10),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(
        st.dictionaries(
            st.sampled_from(["name", "fault", "cert_name", "addresses", "cname", "preference"]),
            st.one_of(
                st.text(max_size=8),
                st.integers(),
                st.lists(st.dictionaries(st.text(max_size=4), st.text(max_size=4)), max_size=2),
            ),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "mx",
                "mode",
                "max_age",
                "policy_host",
                "sts_records",
                "tlsrpt_records",
                "dns_faults",
                "records",
                "expect",
                "mx_patterns",
            ]
        ),
        scenario_values,
        max_size=6,
    )
)
def test_scenario_domains_of_any_shape_raise_only_scenario_error(domain: dict[str, object]) -> None:
    import tomllib  # noqa: F401  (the parser reads TOML; build the table directly)

    from mtasts.lab import scenario as module

    with contextlib.suppress(ScenarioError):
        module._domain(domain, 0)


@given(st.text(max_size=40))
def test_nameserver_parse_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        Nameserver.parse(text)


class _FixedResolver:
    """Stands in for DNS: every name is 127.0.0.1 (only the HTTP side is under test)."""

    async def lookup(self, name: str, rdtype: str) -> object:
        from mtasts.net.dns import Answer

        return Answer(("127.0.0.1",) if rdtype == "A" else ())


http_like = st.one_of(
    st.binary(max_size=400),
    st.lists(
        st.sampled_from(
            [
                b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.1 301 Moved\r\n",
                b"Content-Type: text/plain\r\n",
                b"Content-Length: 5\r\n",
                b"Content-Length: x\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"Location: https://x/\r\n",
                b"\r\n",
                b"5\r\nhello\r\n",
                b"zz\r\n",
                b"0\r\n\r\n",
                b"version: STSv1\r\n",
                b"\x00\xff",
            ]
        ),
        max_size=10,
    ).map(b"".join),
)


def test_fetcher_survives_any_https_response(tmp_path_factory: object) -> None:
    import tempfile
    from pathlib import Path

    from mtasts.lab.ca import LabCA
    from mtasts.net.https import fetch_policy

    state = Path(tempfile.mkdtemp(prefix="mtasts-fuzz-ca-"))
    ca = LabCA(state)
    context = ca.server_context(("mta-sts.fuzz.example",))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(http_like)
    def check(data: bytes) -> None:
        async def main() -> object:
            server = await asyncio.start_server(_replying(data), "127.0.0.1", 0, ssl=context)
            port = server.sockets[0].getsockname()[1]
            try:
                return await fetch_policy(
                    _FixedResolver(), "fuzz.example", port=port, ca_file=ca.ca_file, timeout=1
                )  # type: ignore[arg-type]
            finally:
                server.close()
                await server.wait_closed()

        fetch = asyncio.run(main())
        # Either a response was read, or the failure is named.
        assert fetch.status is not None or fetch.error_kind is not None  # type: ignore[attr-defined]

    check()
