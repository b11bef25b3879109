"""The inventory the cache commands read: an image's size is what its closure holds (a shared
layer in each), pins come from the config and the runtime `pins` table, and `using` names the
images a removed digest breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache.errors import StorageError
from edgecache.storage import pins as runtime_pins
from edgecache.storage.index import Index
from edgecache.storage.inventory import Inventory

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
    images = {image.name: image for image in Inventory(index).images()}
    assert set(images) == {"docker.io/library/multi:1", "docker.io/library/other:2"}
    assert images["docker.io/library/multi:1"].size == 5 + 10 + 10 + 3000
    assert images["docker.io/library/other:2"].size == 10 + 2000
    assert not any(image.pinned for image in images.values())
    assert all(image.last_use > 0 for image in images.values())


def test_pins_from_the_config_and_from_the_runtime_table(index: Index) -> None:
    assert runtime_pins.references(index) == ()
    pinned = {i.name for i in Inventory(index, ["docker.io/library/multi:1"]).images()
              if i.pinned}
    assert pinned == {"docker.io/library/multi:1"}
    runtime_pins.add(index, ["docker.io/library/other:2"])
    pinned = {i.name for i in Inventory(index).images() if i.pinned}
    assert pinned == {"docker.io/library/other:2"}


def test_using_names_every_image_a_digest_is_part_of(index: Index) -> None:
    inventory = Inventory(index)
    assert {i.name for i in inventory.using([D["shared"]])} == {
        "docker.io/library/multi:1", "docker.io/library/other:2"}
    assert {i.name for i in inventory.using([D["only_arm"]])} == {"docker.io/library/multi:1"}
    assert inventory.using([D["loose"]]) == [] and inventory.using([]) == []


def test_a_file_that_is_not_an_index_is_one_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StorageError, match=r"^index .*index\.db: file is not a database$"):
        Index(path)
