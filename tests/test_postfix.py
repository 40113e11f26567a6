"""The resolver proven with a real Postfix: enforce delivers over verified TLS or defers.

The stage (``mtasts.lab.sender``) is a network namespace with the lab on standard
ports, the resolver, and a private Postfix whose smtp_tls_policy_maps is the resolver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mtasts.lab.scenario import builtin_scenarios
from mtasts.lab.sender import PostfixStage, unavailable

from .conftest import MTASTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postfix_lab() -> Iterator[PostfixStage]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with PostfixStage(builtin_scenarios()["postfix"], MTASTS) as stage:
        yield stage


def test_enforce_with_healthy_mx_delivers_over_verified_tls(postfix_lab: PostfixStage) -> None:
    postfix_lab.send("bob@pf-good.example")
    assert "status=sent" in postfix_lab.outcome("bob@pf-good.example")
    assert "Verified TLS connection established to mx.pf-good.example" in postfix_lab.maillog()
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-good.example>"]]
    assert arrived[0]["tls"] is True


def test_enforce_with_wrong_certificate_is_deferred(postfix_lab: PostfixStage) -> None:
    postfix_lab.send("bob@pf-badcert.example")
    line = postfix_lab.outcome("bob@pf-badcert.example")
    assert "status=deferred (Server certificate not verified)" in line
    assert not [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-badcert.example>"]]


def test_stripping_attacker_defeated_by_enforce_but_not_without_policy(
    postfix_lab: PostfixStage,
) -> None:
    postfix_lab.send("bob@pf-stripped.example")
    postfix_lab.send("bob@pf-nopolicy.example")
    stripped = postfix_lab.outcome("bob@pf-stripped.example")
    assert (
        "status=deferred (TLS is required, but was not offered by host mx.pf-stripped.example"
        in stripped
    )
    # The attack the article describes: without a policy the mail goes through in plaintext.
    assert "status=sent" in postfix_lab.outcome("bob@pf-nopolicy.example")
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-nopolicy.example>"]]
    assert arrived[0]["tls"] is False


def test_testing_domain_receives_mail_despite_the_failure(postfix_lab: PostfixStage) -> None:
    postfix_lab.send("bob@pf-testing.example")
    assert "status=sent" in postfix_lab.outcome("bob@pf-testing.example")
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-testing.example>"]]
    assert arrived
