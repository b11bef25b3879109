"""How a peer proves it belongs to the site: `X-Edgecache-Peer: v1 <mode> <time> <hmac>`.

The HMAC-SHA256, keyed by the site secret, covers the mode, the time, the method and the raw
path with its query. Not the secret itself: the main listener may be plain HTTP on the site
network, where a header is readable by anyone on the path and would then open every private
repository to them for good; a MAC bound to one request and a time window reveals nothing of
the secret and can only repeat that same read within `WINDOW` (whose bytes that eavesdropper
has already seen). The mode rides under the MAC, so "answer from your cache only" cannot be
turned into "fetch this for me" by whoever relays the request.

Modes: `owner` (this node owns the key or is asked as if it did: it may go to its upstream and
to the peers' caches, never forward the request to another owner) and `local` (answer from the
store only: the bounded question an owner asks before the WAN).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from edgecache.errors import ManifestUnknown, Unauthorized

HEADER = "X-Edgecache-Peer"
NODE_HEADER = "X-Edgecache-Node"  # on a peer's answer to a probe: which process answered
CHECKED_HEADER = "X-Edgecache-Checked-At"  # on a peer's tag answer: when the tag was confirmed
DELETED_HEADER = "X-Edgecache-Deleted"  # on a peer's 404: a tombstone (CHECKED_HEADER: when)
MODES = ("owner", "local")
WINDOW = 120.0  # seconds either way: the site's clocks are NTP-synchronised, not identical
CHALLENGE = 'EdgecachePeer realm="site"'


class PeerProof:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        # This process among the site's: a member URL that answers a probe with it is this
        # node (a derived `self:` can miss, e.g. a host name that resolves to 127.0.1.1).
        self.node = secrets.token_hex(8)

    def _mac(self, mode: str, stamp: str, method: str, path: str) -> str:
        message = f"{mode}\n{stamp}\n{method.upper()}\n{path}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, mode: str) -> str:
        stamp = str(int(self._clock()))
        return f"v1 {mode} {stamp} {self._mac(mode, stamp, method, path)}"

    def verify(self, method: str, path: str, value: str) -> str:
        """The mode a valid proof carries; Unauthorized (401) for anything else."""
        parts = value.split(" ")
        if len(parts) != 4 or parts[0] != "v1" or parts[1] not in MODES:
            raise Unauthorized("peer request refused: malformed peer proof", CHALLENGE)
        _, mode, stamp, mac = parts
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise Unauthorized("peer request refused: malformed peer proof", CHALLENGE)
        if abs(self._clock() - int(stamp)) > WINDOW:
            raise Unauthorized("peer request refused: proof outside the time window (check "
                               "the nodes' clocks)", CHALLENGE)
        if not hmac.compare_digest(mac, self._mac(mode, stamp, method, path)):
            raise Unauthorized("peer request refused: not signed with the site secret",
                               CHALLENGE)
        return mode


class TagDeleted(ManifestUnknown):
    """A peer's 404 for a local tag it deleted, `at` (Unix time) when it did."""

    def __init__(self, peer: str, at: float | None) -> None:
        super().__init__(f"peer {peer}: the tag was deleted")
        self.at = at


def refuse_unclustered() -> Unauthorized:
    """A peer claim on a node that is in no site: nothing can vouch for it."""
    return Unauthorized("peer request refused: this node is not in a cluster", CHALLENGE)
