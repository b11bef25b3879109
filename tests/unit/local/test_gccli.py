"""`edgecache gc`: its output (digest, size, why), and each usage or state problem in one line
with its exit code, never a traceback. The collection itself: tests/unit/storage/test_gc.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgecache import cli
from tests.support.images import make_image, make_layer
from tests.unit.conftest import MakeEdge
from tests.unit.local.conftest import LOCAL, Pusher, basic


def write_config(tmp_path: Path, storage: Path, local: bool = True) -> str:
    doc: dict[str, object] = {
        "storage": {"path": str(storage)}, "listen": {"http": None},
        "upstreams": {"u.test": {"url": "http://127.0.0.1:9"}}}
    if local:
        doc["local"] = {"registry": LOCAL, "push": "anonymous"}
    path = tmp_path / "edgecache.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


async def test_dry_run_lists_digest_size_and_why_then_gc_removes(
        make_edge: MakeEdge, htpasswd: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    edge = await make_edge(top={"auth": {"htpasswd_file": str(htpasswd)},
                                "local": {"registry": LOCAL}})
    pusher = Pusher(edge, basic())
    old = make_image([make_layer(1000, 801)])
    assert (await pusher.image(old, "v1")).status == 201
    assert (await pusher.image(make_image([make_layer(1000, 802)]), "v1")).status == 201
    config = write_config(tmp_path, edge.storage)

    assert cli.main(["gc", "--config", config, "--dry-run", "--grace", "0s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["DIGEST", "SIZE", "WHY"]
    assert out[1].startswith(old.digest) and "no tag, index or subject" in out[1]
    assert {line.split()[0] for line in out[1:-1]} == {old.digest, *(b.digest for b in old.blobs)}
    assert out[-1].startswith("would remove 3 items")
    assert cli.main(["gc", "--config", config, "--grace", "0s"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("removed 3 items")
    assert not edge.blob_path(old.digest).exists()


@pytest.mark.parametrize(("args", "local", "code", "message"), [
    (["--grace", "soon"], True, 2, "--grace: expected a duration"),
    (["--grace=-1s"], True, 2, "--grace: expected a duration"),
    ([], False, 2, "no local registry is configured (local.registry)"),
    ([], True, 1, "gc: no storage at"),
])
def test_problems_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               args: list[str], local: bool, code: int, message: str) -> None:
    config = write_config(tmp_path, tmp_path / "none", local)
    assert cli.main(["gc", "--config", config, *args]) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err

