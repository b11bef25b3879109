"""Local (pushed) content on the status page and in the catalog: marked local, its pushed
referrers listed on its image page (the `subjects` table the push API fills)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.images import make_image, make_layer, sha256
from tests.unit.local.conftest import (  # noqa: F401 - fixtures
    LOCAL,
    Pusher,
    htpasswd,
    local_edge,
    pusher,
)
from tests.unit.local.test_manifests import EMPTY, artifact


async def doc(client: Pusher, path: str) -> Any:
    async with client.edge.client.get(path, headers=client.headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_pushed_images_are_local_and_show_their_referrers(
        pusher: Pusher) -> None:  # noqa: F811 - the fixture's value
    image = make_image([make_layer(700, 91)])
    assert (await pusher.image(image, "v1")).status == 201
    await pusher.blob(EMPTY)
    subject = {"mediaType": image.media_type, "digest": image.digest,
               "size": len(image.manifest)}
    sig = artifact(subject, "application/vnd.example.signature", "sig")
    sig_digest = sha256(json.dumps(sig).encode())
    assert (await pusher.manifest(sig, sig_digest)).status == 201

    page = await doc(pusher, "/?format=json")
    rows = {(r["upstream"], r["repository"], r["tag"]): r for r in page["images"]["rows"]}
    assert rows[(LOCAL, "team/app", "v1")]["local"] is True
    assert rows[(LOCAL, "team/app", "v1")]["platforms"] == ["linux/amd64"]
    detail = await doc(pusher, f"/image?upstream={LOCAL}&repository=team/app&tag=v1&format=json")
    assert detail["referrers"] == [{"digest": sig_digest,
                                    "artifact_type": "application/vnd.example.signature"}]
    assert await doc(pusher, "/v2/_catalog") == {"repositories": [f"{LOCAL}/team/app"]}
    assert await doc(pusher, f"/v2/{LOCAL}/_catalog") == {"repositories": ["team/app"]}
