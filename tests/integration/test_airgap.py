"""The air gap end to end: warm from a real docker-registry, export, import on a node whose
upstream cannot be reached, serve to skopeo; skopeo's own archives; hostile bundles.

The upstreams are the module's docker-registry (`hub`); the far side's upstream URL is a closed
loopback port, so whatever it serves came from the bundle. Every CLI run is a real
`python -m edgecache` process.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
import zstandard

from tests.support.bundles import (
    Entry,
    blob_entry,
    descriptor,
    index_json,
    index_rows,
    layout_entries,
    storage_snapshot,
    tar_bytes,
    with_entry,
    zstd,
)
from tests.support.corpus import HUB, Corpus, Seeded
from tests.support.edgecache import StartEdgecache
from tests.support.images import OCI_MANIFEST, make_image, make_layer
from tests.support.registry import DockerRegistry, free_port
from tests.support.skopeo import Skopeo, verify_dir_layout, verify_oci_layout
from tests.support.waiting import holds_within

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def edgecache(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgecache", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def write_config(path: Path, storage: Path, upstream_url: str) -> str:
    """A config whose listen.http port has nothing behind it: warm runs the app in-process."""
    path.write_text(yaml.safe_dump({
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": None},
        "storage": {"path": str(storage)},
        "upstreams": {HUB: {"url": upstream_url}},
        "default_upstream": HUB,
        "cache": {"tag_ttl": "0s"},
        "metrics": {"listen": None},
    }))
    return str(path)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound once, then closed: connections refused


def name(seeded: Seeded) -> str:
    return f"{HUB}/{seeded.repository}:{seeded.tag}"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def stored(storage: Path) -> dict[str, bytes]:
    return {f"{p.parent.parent.name}:{p.name}": p.read_bytes()
            for p in (storage / "blobs").glob("*/*/*")}


def test_warm_export_import_then_serve_offline_byte_identical(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    images = [corpus.multi, corpus.alpha, corpus.classic]
    refs = [name(s) for s in images]
    side_a = write_config(tmp_path / "a.yaml", tmp_path / "a", hub.url)
    warmed = ok(edgecache("warm", "--config", side_a, *refs))
    assert "through an in-process edgecache" in warmed
    assert (tmp_path / "a" / "clean-shutdown").exists()
    bundle = tmp_path / "site.tar.zst"
    exported = ok(edgecache("export", "--config", side_a, *refs, "--output", str(bundle)))
    assert "exported 3 images" in exported

    upstream = dead_url()
    side_b = write_config(tmp_path / "b.yaml", tmp_path / "b", upstream)
    imported = ok(edgecache("import", "--config", side_b, str(bundle), "--pin"))
    for seeded in images:
        assert f"  - {name(seeded)}@{seeded.top.digest}" in imported

    served = edgecaches("b", {HUB: upstream}, default_upstream=HUB, storage=tmp_path / "b")
    for seeded in (corpus.multi, corpus.alpha):
        out = tmp_path / f"pulled-{seeded.tag}-{seeded.repository.replace('/', '-')}"
        skopeo.copy(f"docker://{served.address}/{seeded.repository}:{seeded.tag}", f"oci:{out}",
                    tls_verify=False)
        verify_oci_layout(out, seeded)
    out = tmp_path / "pulled-classic"
    skopeo.copy(f"docker://{served.address}/{corpus.classic.repository}:{corpus.classic.tag}",
                f"dir:{out}", tls_verify=False)
    verify_dir_layout(out, corpus.classic)

    # the bundle is a standard OCI layout: skopeo reads it too, once decompressed
    plain = tmp_path / "site.tar"
    with bundle.open("rb") as source, plain.open("wb") as target:
        zstandard.ZstdDecompressor().copy_stream(source, target)
    out = tmp_path / "from-bundle"
    skopeo.copy(f"oci-archive:{plain}:{name(corpus.alpha)}", f"oci:{out}")
    verify_oci_layout(out, corpus.alpha)


def test_warm_through_a_running_service_then_again_fetches_nothing(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache) -> None:
    service = edgecaches("service", {HUB: hub.url}, default_upstream=HUB)
    images = [corpus.beta, corpus.multi]
    hub_mark, service_mark = hub.mark(), service.mark()

    first = ok(edgecache("warm", "--config", str(service.config_path),
                         *(name(s) for s in images)))
    assert f"through the running service at {service.url}" in first

    blobs = {digest for s in images for digest in s.blobs}
    seen = [(r.method, r.path) for r in service.requests_since(service_mark)]
    for seeded in images:
        for digest in seeded.blobs:  # HEAD first, as warm does, then the GET, with ?ns=
            path = f"/v2/{seeded.repository}/blobs/{digest}?ns={HUB}"
            assert ("HEAD", path) in seen and ("GET", path) in seen
    gets = [r.path.rpartition("/")[2] for r in hub.pulls_since(hub_mark)
            if r.method == "GET" and "/blobs/" in r.path]
    assert sorted(gets) == sorted(blobs)  # each blob, the shared layer included, once
    assert service.stored_blobs() == {d: len(b) for s in images for d, b in s.content.items()}

    again_mark = hub.mark()
    second = ok(edgecache("warm", "--config", str(service.config_path),
                          *(name(s) for s in images)))
    reads = hub.pulls_since(again_mark)
    assert [r for r in reads if "/blobs/" in r.path] == []
    assert {r.method for r in reads} <= {"HEAD"}  # only the tags are revalidated
    assert second.count(" cached") == len(images)


def _archive_blobs(archive: Path) -> tuple[str, dict[str, bytes]]:
    with tarfile.open(archive) as tar:
        index = tar.extractfile("index.json")
        assert index is not None
        top = yaml.safe_load(index.read())["manifests"][0]["digest"]
        blobs = {}
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/"):
                handle = tar.extractfile(member)
                assert handle is not None
                blobs["sha256:" + member.name.rpartition("/")[2]] = handle.read()
    return top, blobs


def _pulled_blobs(layout: Path) -> dict[str, bytes]:
    return {f"sha256:{p.name}": p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


def _cache_size_metric(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^edgecache_cache_size_bytes (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1)))


def test_a_skopeo_oci_archive_imports_into_a_running_service_and_serves(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, skopeo: Skopeo,
        tmp_path: Path) -> None:
    conf = skopeo.registries_conf({HUB: hub.url.removeprefix("http://")})
    full = tmp_path / "multi.tar"  # ref.name is the full reference we give
    skopeo.copy(f"docker://{name(corpus.multi)}", f"oci-archive:{full}:{name(corpus.multi)}",
                registries_conf=conf)
    tag_only = tmp_path / "beta.tar"  # ref.name is just "1"
    skopeo.copy(f"docker://{name(corpus.beta)}", f"oci-archive:{tag_only}:1",
                registries_conf=conf)

    # the service runs first: it must serve what is imported under it, and its quota
    # accounting (the janitor resyncs it every second here) must catch up
    upstream, storage = dead_url(), tmp_path / "c"
    served = edgecaches("c", {HUB: upstream}, default_upstream=HUB, storage=storage,
                        extra={"storage": {"path": str(storage), "access_flush_interval": "1s"}},
                        metrics=True)
    assert served.metrics_url is not None
    side_c = write_config(tmp_path / "c.yaml", storage, upstream)
    out = ok(edgecache("import", "--config", side_c, str(full)))
    assert f"tagged {name(corpus.multi)}" in out
    bare = edgecache("import", "--config", side_c, str(tag_only))
    assert bare.returncode == 0 and "only a tag" in bare.stderr and "not tagged" in bare.stdout
    out = ok(edgecache("import", "--config", side_c, str(tag_only),
                       "--repository", f"{HUB}/library/beta"))
    assert f"tagged {name(corpus.beta)}" in out

    for archive, seeded in ((full, corpus.multi), (tag_only, corpus.beta)):
        top, blobs = _archive_blobs(archive)
        pulled = tmp_path / f"pulled-{seeded.repository.replace('/', '-')}"
        skopeo.copy(f"docker://{served.address}/{seeded.repository}:{seeded.tag}",
                    f"oci:{pulled}", tls_verify=False)
        index = yaml.safe_load((pulled / "index.json").read_text())
        assert index["manifests"][0]["digest"] == top
        got = _pulled_blobs(pulled)
        assert sorted(got) == sorted(blobs)
        for digest, data in got.items():
            assert data == blobs[digest], digest  # what skopeo wrote is what is served

    on_disk = sum(served.stored_blobs().values())
    # the janitor runs every second
    holds_within(lambda: _cache_size_metric(served.metrics_url) == on_disk, timeout=10.0,
                 interval=0.1)
    assert _cache_size_metric(served.metrics_url) == on_disk


# ---- hostile bundles ----------------------------------------------------------------------------

def _hostile() -> list[tuple[str, bytes, str]]:
    image = make_image([make_layer(64 * 1024, 301)])
    good = layout_entries(image, f"{HUB}/team/hostile:1")
    layer = image.layers[0].data
    layer_name = "blobs/sha256/" + hashlib.sha256(layer).hexdigest()
    other = make_image([make_layer(4096, 302)])
    not_manifest = index_json([descriptor(layer, OCI_MANIFEST, f"{HUB}/team/hostile:1")])
    many = Entry("blobs", type=tarfile.DIRTYPE)
    cases = [
        ("absolute-name", [*good[:-1], Entry("/etc/cron.d/evil", b"* * * * * root id"),
                           good[-1]], "absolute"),
        ("dot-dot", [*good[:-1], Entry("blobs/../../escape", b"x"), good[-1]], "'..'"),
        ("symlink", [*good[:-1], Entry(layer_name.replace("a", "b", 1), type=tarfile.SYMTYPE,
                                       linkname="/etc/passwd"), good[-1]], "a symlink"),
        ("hardlink", [*good[:-1], Entry("blobs/sha256/" + "c" * 64, type=tarfile.LNKTYPE,
                                        linkname="oci-layout"), good[-1]], "a hard link"),
        ("device", [*good[:-1], Entry("blobs/sha256/" + "d" * 64, type=tarfile.CHRTYPE),
                    good[-1]], "a character device"),
        ("fifo", [*good[:-1], Entry("blobs/sha256/" + "e" * 64, type=tarfile.FIFOTYPE),
                  good[-1]], "a fifo"),
        ("unexpected-name", [*good[:-1], Entry("etc/passwd", b"root::0:0::/:/bin/sh"),
                             good[-1]], "not a name an OCI image layout holds"),
        ("blob-name-not-digest", [*good[:-1], Entry("blobs/sha256/not-a-digest", b"x"),
                                  good[-1]], "not a valid digest"),
        ("blob-bytes-mismatch", with_entry(good, layer_name, data=layer[:-1] + b"!"),
         "do not match its name"),
        ("manifest-not-a-manifest", with_entry(good, "index.json", data=not_manifest),
         "but it is not one"),
        ("index-too-large", with_entry(good, "index.json", data=b" " * (4 * 1024 * 1024 + 1)),
         "at most 4194304"),
        ("index-not-json", with_entry(good, "index.json", data=b"{not json"), "not JSON"),
        ("index-references-missing", with_entry(
            good, "index.json", data=index_json([descriptor(image.manifest),
                                                 descriptor(other.manifest)])),
         "not in the bundle"),
        ("layer-missing", [e for e in good if e.name != layer_name], "not in the bundle"),
        ("no-oci-layout", good[1:], "no oci-layout"),
        ("too-many-members", [*good[:-1], *[many] * 100_001, good[-1]],
         "more than 100000 members"),
        # tar numeric fields tarfile takes as they come (issue 13, item 16)
        ("pax-negative-size", with_entry(good, layer_name, pax={"size": "-4096"}),
         "claims a size of -4096 bytes"),
        ("pax-huge-size", with_entry(good, layer_name, pax={"size": str(1 << 70)}),
         "claims a size of"),
        ("pax-sparse-map", with_entry(good, layer_name, pax={"GNU.sparse.map": "0,x"}),
         "a sparse file"),
        ("pax-sparse-1.0", with_entry(good, layer_name, pax={"GNU.sparse.major": "1",
                                                             "GNU.sparse.minor": "0"}),
         "a sparse file"),
        ("pax-mtime-nan", with_entry(good, layer_name, pax={"mtime": "nan"}),
         "invalid mtime"),
    ]
    out = []
    for i, (case, entries, message) in enumerate(cases):
        data = tar_bytes(entries)
        out.append((case, zstd(data) if i % 2 == 0 else data, message))
    full = tar_bytes(good)
    out.append(("truncated-zstd", zstd(full)[: len(zstd(full)) * 2 // 3], "truncated"))
    out.append(("truncated-tar", full[: len(full) // 2], "truncated"))
    out.append(("duplicate-blob", zstd(tar_bytes([*good[:-1], blob_entry(layer, layer_name),
                                                  good[-1]])), "appears twice"))
    out.append(("base256-negative-size", _base256_size(full, layer_name, -1),
                "claims a size of -1 bytes"))
    return out


def _base256_size(archive: bytes, member: str, size: int) -> bytes:
    """`archive` with `member`'s ustar size field rewritten in GNU base-256 (which can say a
    negative number) and the header checksum made right again."""
    data = bytearray(archive)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        offset = tar.getmember(member).offset
    data[offset + 124: offset + 136] = tarfile.itn(size, 12, tarfile.GNU_FORMAT)
    data[offset + 148: offset + 156] = b" " * 8
    checksum = sum(data[offset: offset + tarfile.BLOCKSIZE])
    data[offset + 148: offset + 156] = b"%06o\0 " % checksum
    return bytes(data)


def test_hostile_bundles_are_refused_and_change_nothing(tmp_path: Path) -> None:
    storage = tmp_path / "d"
    config = write_config(tmp_path / "d.yaml", storage, dead_url())
    seed = tmp_path / "seed.tar"
    seed.write_bytes(tar_bytes(layout_entries(make_image([make_layer(32 * 1024, 303)]),
                                              f"{HUB}/team/seed:1")))
    ok(edgecache("import", "--config", config, str(seed)))
    files, rows = storage_snapshot(storage), index_rows(storage)
    assert rows["tags"] and rows["blobs"]

    failures = []
    for case, data, message in _hostile():
        bundle = tmp_path / f"{case}.bundle"
        bundle.write_bytes(data)
        result = edgecache("import", "--config", config, str(bundle))
        # progress lines ("importing: ...", every few seconds off a terminal) are not the message
        lines = [line for line in result.stderr.splitlines()
                 if not line.startswith("importing:")]
        if (result.returncode != 1 or len(lines) != 1 or not lines[0].startswith("edgecache: ")
                or message not in lines[0]):
            failures.append(f"{case}: exit {result.returncode}, stderr {result.stderr!r}")
        if storage_snapshot(storage) != files or index_rows(storage) != rows:
            failures.append(f"{case}: the storage changed")
        bundle.unlink()
    assert failures == []


def test_platform_filter_warms_only_that_platform_and_export_follows(
        hub: DockerRegistry, corpus: Corpus, tmp_path: Path) -> None:
    multi = corpus.multi
    assert multi.top.__class__.__name__ == "Index"
    amd, arm = multi.top.images  # type: ignore[union-attr]
    config = write_config(tmp_path / "e.yaml", tmp_path / "e", hub.url)
    mark = hub.mark()
    ok(edgecache("warm", "--config", config, "--platform", "linux/arm64", name(multi)))
    assert set(stored(tmp_path / "e")) == {multi.top.digest, arm.digest,
                                           *(b.digest for b in arm.blobs)}
    touched = " ".join(r.path for r in hub.pulls_since(mark))
    assert amd.digest not in touched
    assert not any(b.digest in touched for b in amd.blobs)

    whole = edgecache("export", "--config", config, name(multi), "-o", str(tmp_path / "x.zst"))
    assert whole.returncode == 1 and "warm it first" in whole.stderr
    assert len(whole.stderr.splitlines()) == 1 and not (tmp_path / "x.zst").exists()
    ok(edgecache("export", "--config", config, name(multi), "--platform", "linux/arm64",
                 "-o", str(tmp_path / "arm.zst")))
    side_f = write_config(tmp_path / "f.yaml", tmp_path / "f", dead_url())
    out = ok(edgecache("import", "--config", side_f, str(tmp_path / "arm.zst")))
    assert "1 of 2 platforms" in out
    assert stored(tmp_path / "f") == stored(tmp_path / "e")


def test_warm_through_a_service_that_locks_its_upstream_uses_the_config_token(
        hub: DockerRegistry, corpus: Corpus, edgecaches: StartEdgecache, tmp_path: Path) -> None:
    """A service whose upstream is `access: authenticated` answers 401 to anonymous clients;
    warm, run with the service's own config, presents the tokens file's first token."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# operators\nwarm:tok-" + "a" * 24 + "\n")
    tokens.chmod(0o600)
    service = edgecaches("locked", {}, default_upstream=HUB, extra={
        "upstreams": {HUB: {"url": hub.url, "access": "authenticated"}},
        "auth": {"tokens_file": str(tokens)}})
    seeded = corpus.beta
    anonymous = urllib.request.Request(f"{service.url}/v2/{seeded.repository}/manifests/"
                                       f"{seeded.tag}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    refused.value.close()

    warmed = ok(edgecache("warm", "--config", str(service.config_path), name(seeded)))
    assert f"through the running service at {service.url}" in warmed
    assert service.stored_blobs() == {d: len(b) for d, b in seeded.content.items()}

    # a config whose tokens file holds a token the service does not know: refused, and the
    # line says where warm took its credentials from
    wrong = tmp_path / "wrong-tokens"
    wrong.write_text("warm:tok-" + "b" * 24 + "\n")
    wrong.chmod(0o600)
    doc = yaml.safe_load(service.config_path.read_text())
    doc["auth"]["tokens_file"] = str(wrong)
    other_config = tmp_path / "other.yaml"
    other_config.write_text(yaml.safe_dump(doc))
    done = edgecache("warm", "--config", str(other_config), name(corpus.alpha))
    assert done.returncode != 0
    assert "auth.tokens_file" in done.stdout + done.stderr
