"""The `local:` section: the site's own registry, which clients push to.

```
local:
  registry: registry.local   # the route name: path prefix, ?ns=, or the default
  push: authenticated        # or anonymous (only when set: a push writes primary data)
  upload_timeout: 1h         # an idle upload session is dropped after this
```

Without the section there is no local registry and every write stays 405. `authenticated`
without `auth:` credentials is a problem, not an open registry: nobody could push, or (if it
fell back to anonymous) anybody could.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgecache import configfields as fields
from edgecache.config import AuthConfig
from edgecache.configvalues import Problems, upstream_name
from edgecache.local.gcsettings import KEYS as GC_KEYS
from edgecache.local.gcsettings import GcSettings, parse_gc

DEFAULT_UPLOAD_TIMEOUT = 3600.0


@dataclass(frozen=True)
class LocalConfig:
    registry: str  # a route name like an upstream's; its content is `links.upstream` = this
    push: str = "authenticated"  # or "anonymous"
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT
    gc: GcSettings = field(default_factory=GcSettings)  # local.gc_* (local/gcsettings.py)


def parse_local(raw: object, auth: AuthConfig, upstreams: Iterable[str],
                p: Problems) -> LocalConfig | None:
    """The section, or None when it is absent (every problem recorded in `p`)."""
    if raw is None:
        return None
    section = fields.section(raw, "local", {"registry", "push", "upload_timeout", *GC_KEYS}, p)
    name = p.value(lambda: upstream_name(section.get("registry"), "local.registry"), "")
    if name and name in set(upstreams):
        p.add(f"local.registry: {name} is also an upstream; the local registry needs a name "
              "of its own")
    push = p.value(lambda: fields.choice(section, "push", "local", "authenticated",
                                         ("authenticated", "anonymous")), "")
    if push == "authenticated" and not (auth.htpasswd_file or auth.tokens_file):
        p.add("local.push: authenticated pushes need client credentials; set "
              "auth.htpasswd_file or auth.tokens_file (or push: anonymous)")
    timeout = p.value(lambda: fields.positive_duration(
        section, "upload_timeout", "local", DEFAULT_UPLOAD_TIMEOUT), DEFAULT_UPLOAD_TIMEOUT)
    gc = parse_gc(section, p)
    return LocalConfig(registry=name, push=push or "authenticated",
                       upload_timeout=timeout, gc=gc) if name else None
