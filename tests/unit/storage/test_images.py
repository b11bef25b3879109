"""The one definition of an image the status page and the cache commands read: its size is
what its closure holds (a shared layer in each), pins come from the config and the runtime
`pins` table (and protect a digest whatever tag names it), `using` names the images a removed
digest breaks, and a page's row is the same image `every` lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache.errors import StorageError
from edgecache.storage import pins as runtime_pins
from edgecache.storage.holdings import Holdings
from edgecache.storage.images import Images
from edgecache.storage.index import Index

D = {name: "sha256:" + (f"{i:x}" * 64)[:64] for i, name in enumerate(
    ["index", "amd64", "arm64", "config", "shared", "only_arm", "other", "other_config", "loose"],
    start=1)}


@pytest.fixture
def index(tmp_path: Path) -> Index:
    index = Index(tmp_path / "index.db")
    for name in ("config", "shared", "only_arm", "other_config", "loose"):
        index.record_blob(D[name], 1000)
    index.record_blob(D["amd64"], 10, "application/vnd.oci.image.manifest.v1+json",
                      [D["config"], D["shared"]])
    index.record_blob(D["arm64"], 10, "application/vnd.oci.image.manifest.v1+json",
                      [D["config"], D["shared"], D["only_arm"]])
    index.record_blob(D["index"], 5, "application/vnd.oci.image.index.v1+json",
                      [D["amd64"], D["arm64"]])
    index.record_blob(D["other"], 10, "application/vnd.oci.image.manifest.v1+json",
                      [D["other_config"], D["shared"]])
    index.set_tag("docker.io", "library/multi", "1", D["index"])
    index.set_tag("docker.io", "library/other", "2", D["other"])
    index.set_tag("docker.io", "library/gone", "3", "sha256:" + "f" * 64)  # evicted manifest
    return index


def test_images_sizes_count_each_held_digest_once_per_image(index: Index) -> None:
    images = {image.name: image for image in Images(index).every()}
    assert set(images) == {"docker.io/library/multi:1", "docker.io/library/other:2"}
    assert images["docker.io/library/multi:1"].size == 5 + 10 + 10 + 3000
    assert images["docker.io/library/other:2"].size == 10 + 2000
    assert not any(image.pinned for image in images.values())
    assert all(image.last_use > 0 for image in images.values())


def test_pins_from_the_config_and_from_the_runtime_table(index: Index) -> None:
    assert runtime_pins.references(index) == ()
    pinned = {i.name for i in Images(index, ["docker.io/library/multi:1"]).every()
              if i.pinned}
    assert pinned == {"docker.io/library/multi:1"}
    runtime_pins.add(index, ["docker.io/library/other:2"])
    pinned = {i.name for i in Images(index).every() if i.pinned}
    assert pinned == {"docker.io/library/other:2"}


def test_using_names_every_image_a_digest_is_part_of(index: Index) -> None:
    images = Images(index)
    before = images.every()
    assert {i.name for i in images.using([D["shared"]], before)} == {
        "docker.io/library/multi:1", "docker.io/library/other:2"}
    assert {i.name for i in images.using([D["only_arm"]], before)} == {
        "docker.io/library/multi:1"}
    assert images.using([D["loose"]], before) == [] and images.using([], before) == []
    index.forget([D["only_arm"], D["arm64"], D["index"]])  # what a repair of only_arm does
    assert {i.name for i in images.using([D["only_arm"]], before)} == {
        "docker.io/library/multi:1"}


def test_a_page_row_is_the_image_every_lists(index: Index) -> None:
    index.set_tag("docker.io", "library/multi", "same", D["index"])
    images = Images(index, ["docker.io/library/multi:1"])
    rows = Holdings(index, ["docker.io/library/multi:1"]).images({"docker.io"}).rows
    assert [row for row in rows if row.media_type] == images.every()
    # a pin protects the digest, so every tag naming it is pinned (what eviction keeps)
    assert [(row.tag, row.pinned, row.size) for row in rows] == [
        ("3", False, 0), ("1", True, 3025), ("same", True, 3025), ("2", False, 2010)]


def test_a_file_that_is_not_an_index_is_one_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StorageError, match=r"^index .*index\.db: file is not a database$"):
        Index(path)
