"""The peer proof: an HMAC of mode, time, method and path under the site secret."""

from __future__ import annotations

import pytest

from edgecache.cluster.proof import WINDOW, PeerProof
from edgecache.errors import Unauthorized

SECRET = b"s" * 32
PATH = "/v2/team/app/blobs/sha256:" + "a" * 64 + "?ns=site.test"


def at(now: float) -> PeerProof:
    return PeerProof(SECRET, clock=lambda: now)


def test_a_proof_opens_that_request_in_its_mode() -> None:
    for mode in ("owner", "local"):
        assert at(1000).verify("GET", PATH, at(1000).sign("GET", PATH, mode)) == mode


@pytest.mark.parametrize("change", [
    lambda v: v.replace(" local ", " owner "),  # "answer from cache" made "fetch it for me"
    lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"),
    lambda v: "v2" + v[2:],
    lambda v: v + " extra",
    lambda v: "",
    lambda v: "v1 local 12x 00",
])
def test_a_changed_or_malformed_proof_is_refused(change: object) -> None:
    value = at(1000).sign("GET", PATH, "local")
    with pytest.raises(Unauthorized):
        at(1000).verify("GET", PATH, change(value))  # type: ignore[operator]


def test_a_proof_holds_for_its_request_only() -> None:
    value = at(1000).sign("GET", PATH, "owner")
    with pytest.raises(Unauthorized):
        at(1000).verify("HEAD", PATH, value)
    with pytest.raises(Unauthorized):
        at(1000).verify("GET", PATH.replace("site.test", "other.test"), value)
    with pytest.raises(Unauthorized):
        PeerProof(b"t" * 32, clock=lambda: 1000).verify("GET", PATH, value)


def test_a_proof_expires_outside_the_window() -> None:
    value = at(1000).sign("GET", PATH, "owner")
    assert at(1000 + WINDOW).verify("GET", PATH, value) == "owner"
    with pytest.raises(Unauthorized, match="time window"):
        at(1001 + WINDOW).verify("GET", PATH, value)
    with pytest.raises(Unauthorized, match="time window"):
        at(999 - WINDOW).verify("GET", PATH, value)
