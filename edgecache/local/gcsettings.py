"""`local.gc_grace` and `local.gc_interval`: garbage collection of the local repositories.

```
local:
  gc_grace: 1h       # content published or read less than this ago is never collected
  gc_interval: 0s    # a collection in the running service every interval; 0s: only `edgecache gc`
```

The grace period is what makes a collection safe against pushes in progress: a push's blobs
arrive before the manifest that references them (and a client may take minutes between them),
so it is an hour by default, never less than 0. The periodic collection is off by default:
untagged pushed content (a manifest pushed by digest) is primary data, and removing it on a
timer is the operator's decision (`edgecache gc --dry-run` shows what would go).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgecache import configfields as fields
from edgecache.configvalues import Problems

DEFAULT_GRACE = 3600.0
KEYS = frozenset({"gc_grace", "gc_interval"})  # the keys of `local:` this module reads


@dataclass(frozen=True)
class GcSettings:
    grace: float = DEFAULT_GRACE
    interval: float = 0.0  # 0: no periodic collection


def parse_gc(section: Mapping[str, Any], p: Problems) -> GcSettings:
    """The two keys of the `local:` section (every problem recorded in `p`)."""
    grace = p.value(lambda: fields.duration(section, "gc_grace", "local", DEFAULT_GRACE),
                    DEFAULT_GRACE)
    interval = p.value(lambda: fields.duration(section, "gc_interval", "local", 0.0), 0.0)
    return GcSettings(grace, interval)  # durations are never negative (parse_duration)
