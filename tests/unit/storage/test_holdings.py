"""The status page's queries over a real index: bounded sorts, byte-order catalog pages."""

from __future__ import annotations

from pathlib import Path

from edgecache.storage.holdings import Holdings
from edgecache.storage.index import Index

UP = "docker.io"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def fill(path: Path) -> Index:
    """Three tagged images of sizes 300, 200, 100 (a manifest of 10 bytes and one layer each)."""
    index = Index(path / "index.db")
    for i in range(3):
        index.record_blob(digest(100 + i), 10 * (30 - 10 * i) - 10)
        index.record_blob(digest(i), 10, "application/vnd.oci.image.manifest.v1+json",
                          children=[digest(100 + i)])
        index.set_tag(UP, f"team/app{i}", "1", digest(i))
        index.sql.execute("UPDATE blobs SET last_access=? WHERE digest=?", (1000 + i, digest(i)))
    return index


def test_a_sort_over_more_images_than_its_limit_is_by_name_and_says_so(
        tmp_path: Path) -> None:
    index = fill(tmp_path)
    try:
        bounded = Holdings(index, sort_limits={"size": 2})
        page = bounded.images([UP], sort="size", descending=False)
        assert page.sort == "name" and "at most 2 images" in page.note
        assert [r.repository for r in page.rows] == ["team/app0", "team/app1", "team/app2"]
        narrowed = bounded.images([UP], search="app1", sort="size")
        assert narrowed.sort == "size" and narrowed.note == ""
        free = Holdings(index, sort_limits={})
        assert [r.size for r in free.images([UP], sort="size").rows] == [100, 200, 300]
        assert [r.repository for r in free.images([UP], sort="pulled", descending=True).rows
                ] == ["team/app2", "team/app1", "team/app0"]
    finally:
        index.close()


def test_catalog_pages_across_upstreams_in_byte_order(tmp_path: Path) -> None:
    """`reg/x` sorts after `reg.x/y` ('.' < '/'): the merge is by full name, not by upstream."""
    index = Index(tmp_path / "index.db")
    try:
        for upstream, repository in (("reg", "a"), ("reg", "z"), ("reg.x", "b"), ("r", "q")):
            index.set_tag(upstream, repository, "1", digest(1))
        holdings = Holdings(index)
        upstreams = ["reg", "reg.x", "r"]
        everything = ["r/q", "reg.x/b", "reg/a", "reg/z"]
        assert holdings.repositories(upstreams, None, 10, prefixed=True) == (everything, False)
        pages, last = [], None
        for _ in range(5):  # bounded: 4 pages of one
            names, more = holdings.repositories(upstreams, last, 1, prefixed=True)
            pages += names
            if not more:
                break
            last = names[-1]
        assert pages == everything
        assert holdings.repositories(upstreams, "reg.x/b", 10, True) == (["reg/a", "reg/z"],
                                                                         False)
        assert holdings.repositories(["reg"], "m", 10, prefixed=False) == (["z"], False)
    finally:
        index.close()
