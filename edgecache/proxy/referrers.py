"""`GET /v2/<name>/referrers/<digest>` until edgecache serves referrers itself: passed through.

An OCI 1.1 upstream answers with an image index; it goes to the client as sent (checked to be
one, within the manifest size limit), with the upstream's `OCI-Filters-Applied` and its paging.
Every other outcome is a 404 that is not NAME_UNKNOWN: the spec's "Unavailable Referrers API",
after which clients read the `<alg>-<hex>` tag instead, through the ordinary manifest path, so
a cached tag still answers on a site whose uplink is down. Only a refusal of our credentials
stays a 403: the operator has something to fix.

Nothing here is stored or shared between requests: each one asks the route's own upstream, with
that upstream's credentials, so no answer crosses from a private upstream to another route
(the claim rules of `proxy/claims.py` are about content we hold; there is none).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgecache.errors import NotFound, NotOffered, UpstreamAuthError, UpstreamError
from edgecache.proxy.routing import Target
from edgecache.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

# The only filter the spec defines; a header naming anything else is not passed on.
_FILTERS = re.compile(r"artifactType(\s*,\s*artifactType)*")
_FALLBACK = "the referrers API is not available here; use the {tag} tag (referrers tag schema)"


@dataclass(frozen=True, slots=True)
class Referrers:
    body: bytes  # an OCI image index
    link: str | None  # the upstream's Link, pointing at the upstream
    filters: str | None  # OCI-Filters-Applied


async def list_referrers(client: UpstreamClient, target: Target,
                         query: Mapping[str, str]) -> Referrers:
    """The upstream's referrers of `target.reference`, or NotOffered (a 404)."""
    upstream_query = {key: value for key, value in query.items() if key != "ns"}
    try:
        body, link, filters = await client.get_referrers(target.repository, target.reference,
                                                         upstream_query)
    except UpstreamAuthError:
        raise
    except (NotFound, UpstreamError) as exc:
        log.debug("referrers of %s/%s@%s: %s", target.upstream, target.repository,
                  target.reference, exc)
        digest = target.content_digest()
        tag = f"{digest.algorithm}-{digest.hex[:64]}"  # the schema keeps 64 characters of it
        raise NotOffered(f"{_FALLBACK.format(tag=tag)} ({exc})"[:500]) from None
    if filters is not None and not _FILTERS.fullmatch(filters.strip()):
        filters = None
    return Referrers(body, link, filters.strip() if filters else None)
