"""The domain exception tree, grouped by what the caller can do about it.

```
EdgecacheError
├── ConfigError             the operator must fix the configuration
├── Unauthorized            the client must authenticate (401 with a challenge)
├── InvalidRequest          the client sent something malformed; nothing was touched
│   ├── NameInvalid, TagInvalid, DigestInvalid, RangeNotSatisfiable
│   ├── Unsupported         a verb or feature a pull-through cache does not offer
│   └── BlobUploadInvalid, ManifestBlobUnknown, ManifestRejected, PushTooLarge: a push refused
├── TooManyRequests         a concurrency bound was reached; retry shortly
├── NotFound                the content does not exist (here and, where asked, upstream)
│   ├── BlobUnknown, ManifestUnknown, NameUnknown
│   ├── BlobUploadUnknown   an upload session: a pull-through cache has none
│   ├── NotOffered          an API edgecache does not serve (or its upstream does not offer):
│   │                       a 404, so clients use their documented fallback
│   └── NotCached           an export needs content the cache does not hold (warm it first)
├── UpstreamError           the upstream could not give us what we needed
│   ├── UpstreamUnavailable refused, DNS, timeout, TLS, 5xx, 429
│   ├── UpstreamAuthError   the upstream refused our credentials or the repository
│   └── UpstreamBadResponse the upstream answered with something that is not a registry answer
├── IntegrityError          content is not what it claims to be; it is never published
│   ├── DigestMismatch      bytes do not match their digest
│   ├── ManifestInvalid     not a manifest, an unknown media type, or over the size cap
│   └── BundleInvalid       an air-gap bundle is malformed or hostile; nothing was imported
└── StorageError            the local disk failed us
```

This module knows no HTTP: `edgecache.web.errors` holds the one table that maps these to status
codes and OCI error codes.
"""

from __future__ import annotations


class EdgecacheError(Exception):
    """Base of every error edgecache raises on purpose."""


class ConfigError(EdgecacheError):
    """The configuration is invalid; the message names the key and the problem."""


class Unauthorized(EdgecacheError):
    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message)
        self.challenge = challenge  # the WWW-Authenticate value


class InvalidRequest(EdgecacheError):
    """The client's request is malformed."""


class NameInvalid(InvalidRequest):
    pass


class TagInvalid(InvalidRequest):
    pass


class DigestInvalid(InvalidRequest):
    pass


class RangeNotSatisfiable(InvalidRequest):
    """The Range header is malformed, multi-part, or outside the blob."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class Unsupported(InvalidRequest):
    """A method the route does not take: 405 with `allow` (the methods it does) as Allow."""

    def __init__(self, message: str, allow: str = "GET, HEAD") -> None:
        super().__init__(message)
        self.allow = allow


class BlobUploadInvalid(InvalidRequest):
    """An upload session cannot take this request (a chunk out of order, a bad header)."""


class UploadRangeInvalid(RangeNotSatisfiable):
    """A chunk that does not start where the upload ends (416)."""


class ManifestBlobUnknown(InvalidRequest):
    """A pushed manifest names content this registry does not hold."""


class ManifestRejected(InvalidRequest):
    """A pushed manifest is not one (the client's fault: 400, unlike ManifestInvalid's 502)."""


class PushTooLarge(InvalidRequest):
    """A pushed manifest over the size limit, or a blob the disk has no room for (413)."""


class TooManyRequests(EdgecacheError):
    """A bound on concurrent work was reached; the client should retry shortly."""


class NotFound(EdgecacheError):
    pass


class BlobUnknown(NotFound):
    pass


class ManifestUnknown(NotFound):
    pass


class NameUnknown(NotFound):
    pass


class BlobUploadUnknown(NotFound):
    pass


class NotOffered(NotFound):
    """A path that is no endpoint edgecache serves, or an optional API (referrers) its upstream
    does not answer: the spec's clients treat a 404 there as "not available" and fall back."""


class NotCached(NotFound):
    """An export named an image (or a blob of one) that is not in the cache."""


class UpstreamError(EdgecacheError):
    """The upstream could not serve us; `upstream` names which one."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"upstream {upstream}: {message}")
        self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamAuthError(UpstreamError):
    pass


class UpstreamBadResponse(UpstreamError):
    pass


class IntegrityError(EdgecacheError):
    pass


class DigestMismatch(IntegrityError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"content does not match digest {expected} (got {actual})")
        self.expected = expected
        self.actual = actual


class ManifestInvalid(IntegrityError):
    pass


class BundleInvalid(IntegrityError):
    """An import refused a bundle; the message says which member and why, in one line."""


class StorageError(EdgecacheError):
    pass
