"""A local repository's tags list across a site: per tag the newest event wins; a peer's
answer that is not one, or times that are not numbers, are no evidence; times are capped at
now (a peer's clock ahead must not make its event win)."""

from __future__ import annotations

import json
import time

from edgecache.cluster.localtags import TagEvents, merged


def test_the_newest_event_per_tag_wins() -> None:
    a = TagEvents({"v1": 10.0, "v2": 10.0}, {"v3": 30.0})
    b = TagEvents({"v1": 5.0, "v3": 20.0, "v4": 1.0}, {"v1": 20.0, "v2": 5.0})
    assert merged([a, b]) == ["v2", "v4"]  # v1 deleted after both pushes, v3 after its push
    assert merged([TagEvents({"v1": 30.0}), b]) == ["v1", "v3", "v4"]  # v1 pushed again
    assert merged([]) == []


def test_a_peers_answer_is_read_strictly() -> None:
    doc = TagEvents({"v1": 10.0}, {"v2": 20.0}).document("team/app")
    assert doc["tags"] == ["v1"]
    assert TagEvents.read(json.dumps(doc).encode()) == TagEvents({"v1": 10.0}, {"v2": 20.0})
    for garbage in (b"", b"[]", b"{", b'{"tags": []}', b'{"pushed": [], "deleted": {}}'):
        assert TagEvents.read(garbage) is None
    odd = TagEvents.read(json.dumps({"pushed": {"a": "1", "b": True, "c": -1, "d": 1e400,
                                                "e": 10**400, "f": 2.5},
                                     "deleted": {"g": time.time() + 3600}}).encode())
    assert odd is not None
    assert odd.pushed == {"f": 2.5}
    assert odd.deleted["g"] <= time.time()  # capped at now
