from __future__ import annotations

import pytest

from edgecache.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    NotOffered,
)
from edgecache.proxy.routing import Router, Target

DIGEST = "sha256:" + "ab" * 32
ROUTER = Router(["docker.io", "ghcr.io", "127.0.0.1:5001"], "docker.io")


@pytest.mark.parametrize(("path", "ns", "expected"), [
    # Docker registry-mirrors: no registry named, default upstream, library/ added
    ("nginx/manifests/1.27", None, Target("docker.io", "library/nginx", "manifests", "1.27")),
    ("bitnami/redis/manifests/7", None, Target("docker.io", "bitnami/redis", "manifests", "7")),
    # containerd: ?ns=
    ("library/nginx/blobs/" + DIGEST, "docker.io",
     Target("docker.io", "library/nginx", "blobs", DIGEST)),
    ("owner/app/manifests/v1", "ghcr.io", Target("ghcr.io", "owner/app", "manifests", "v1")),
    ("library/nginx/manifests/1", "registry-1.docker.io",
     Target("docker.io", "library/nginx", "manifests", "1")),
    # podman / CRI-O path prefix
    ("ghcr.io/owner/app/manifests/v1", None, Target("ghcr.io", "owner/app", "manifests", "v1")),
    ("docker.io/nginx/manifests/1", None, Target("docker.io", "library/nginx", "manifests", "1")),
    ("127.0.0.1:5001/team/x/tags/list", None, Target("127.0.0.1:5001", "team/x", "tags", "list")),
    ("team/x/referrers/" + DIGEST, "ghcr.io", Target("ghcr.io", "team/x", "referrers", DIGEST)),
    ("ghcr.io/team/x/referrers/" + DIGEST, None,
     Target("ghcr.io", "team/x", "referrers", DIGEST)),
    ("a/manifests/" + "t" * 128, None, Target("docker.io", "library/a", "manifests", "t" * 128)),
    # containerd override_path sends both the prefix and ns
    ("ghcr.io/owner/app/manifests/v1", "ghcr.io",
     Target("ghcr.io", "owner/app", "manifests", "v1")),
    ("owner/app/manifests/" + DIGEST, "ghcr.io",
     Target("ghcr.io", "owner/app", "manifests", DIGEST)),
])
def test_routes(path: str, ns: str | None, expected: Target) -> None:
    assert ROUTER.resolve(path, ns) == expected


@pytest.mark.parametrize(("path", "ns", "error"), [
    ("x/manifests/1", "evil.example", NameUnknown),
    ("evil.example/x/manifests/1", None, NameUnknown),
    ("localhost/x/manifests/1", None, NameUnknown),
    ("Upper/manifests/1", None, NameInvalid),
    ("a/../b/manifests/1", None, NameInvalid),
    ("a%2Fb/manifests/1", None, NameInvalid),
    ("a/manifests/1%00", None, NameInvalid),
    # neither a tag nor a digest: no such manifest (the spec's 404), not a malformed request
    ("a/manifests/.bad", None, ManifestUnknown),
    ("a/manifests/.INVALID_MANIFEST_NAME", None, ManifestUnknown),
    ("a/manifests/-dash", None, ManifestUnknown),
    ("a/manifests/" + "t" * 129, None, ManifestUnknown),
    # a reference with ':' can only be a digest: a malformed one is a 400
    ("a/manifests/sha256:totallywrong", None, DigestInvalid),
    ("a/blobs/latest", None, DigestInvalid),
    ("a/blobs/sha256:1234", None, DigestInvalid),
    ("a/manifests/md5:" + "a" * 32, None, DigestInvalid),
    ("a/referrers/latest", None, DigestInvalid),
    ("a/referrers/sha256:1234", None, DigestInvalid),
    ("Upper/referrers/" + DIGEST, None, NameInvalid),
    ("a/blobs/uploads/", None, BlobUploadUnknown),
    ("a/blobs/uploads/some-uuid", None, BlobUploadUnknown),
    ("a/tags/other", None, NotOffered),
    ("just-a-name", None, NotOffered),
    ("_catalog", None, NotOffered),
    ("a/b/c", None, NotOffered),
])
def test_refusals(path: str, ns: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        ROUTER.resolve(path, ns)


def test_no_default_upstream_needs_a_registry() -> None:
    router = Router(["ghcr.io"], None)
    with pytest.raises(NameUnknown):
        router.resolve("owner/app/manifests/v1", None)
    assert router.resolve("owner/app/manifests/v1", "ghcr.io").upstream == "ghcr.io"


def test_library_prefix_only_for_docker_hub() -> None:
    assert ROUTER.resolve("app/manifests/v1", "ghcr.io").repository == "app"
