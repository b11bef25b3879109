"""The `prefetch:` section: images kept fresh on a schedule, and layer prefetch on a first pull.

    prefetch:
      interval: 15m          # how often each image's tag is asked (a HEAD) and, moved, fetched
      concurrency: 2         # blob transfers at a time for the schedule
      bandwidth: 10MiB       # bytes per second the schedule may read on average (none: no bound)
      layers: false          # on a manifest's first pull, fetch its layers ahead of the client
                             # (the config, then the largest, 4 at a time: proxy/prefetch.py)
      images:
        - docker.io/library/nginx:1.27
        - image: registry.k8s.io/pause:3.9
          platforms: [linux/amd64, linux/arm64]

Images are `registry/repository:tag` whose registry is a configured upstream, as for pins:
one that could not resolve would be fetched by nobody, silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecache import configfields as fields
from edgecache.airgap.platform import Platform
from edgecache.configvalues import Problems, parse_size, show
from edgecache.errors import ConfigError
from edgecache.imagerefs import reference_problem
from edgecache.oci import ImageReference

KEYS = {"images", "interval", "concurrency", "bandwidth", "layers"}
MAX_CONCURRENCY = 64


@dataclass(frozen=True)
class PrefetchImage:
    reference: str  # registry/repository:tag (a digest never moves: nothing to keep fresh)
    platforms: tuple[Platform, ...] = ()  # of an index; none: every platform


@dataclass(frozen=True)
class PrefetchConfig:
    images: tuple[PrefetchImage, ...] = ()
    interval: float = 900.0
    concurrency: int = 2
    bandwidth: int | None = None  # bytes per second; None: no bound
    layers: bool = False


def parse_prefetch(raw: object, names: set[str], p: Problems) -> PrefetchConfig:
    """Every problem recorded, one line each; the defaults carried on past a bad key."""
    section = fields.section(raw, "prefetch", KEYS, p)
    default = PrefetchConfig()
    interval = p.value(lambda: fields.positive_duration(section, "interval", "prefetch",
                                                        default.interval), default.interval)
    concurrency = p.value(lambda: fields.count(section, "concurrency", "prefetch",
                                               default.concurrency, MAX_CONCURRENCY),
                          default.concurrency)
    bandwidth = p.value(lambda: _bandwidth(section.get("bandwidth")), None)
    layers = section.get("layers", default.layers)
    if not isinstance(layers, bool):
        p.add(f"prefetch.layers: expected true or false, got {show(layers)}")
        layers = default.layers
    images = section.get("images", [])
    if not isinstance(images, list):
        p.add(f"prefetch.images: expected a list of image references, got {show(images)}")
        images = []
    parsed = [_image(item, f"prefetch.images[{i}]", names, p) for i, item in enumerate(images)]
    return PrefetchConfig(tuple(i for i in parsed if i is not None), interval, concurrency,
                          bandwidth, layers)


def _bandwidth(value: object) -> int | None:
    if value in (None, ""):
        return None
    size = parse_size(value, "prefetch.bandwidth")
    if size.percent is not None or not size.bytes:
        raise ConfigError(f"prefetch.bandwidth: expected bytes per second such as '10MiB', "
                          f"got {show(value)}")
    return size.bytes


def _image(item: object, key: str, names: set[str], p: Problems) -> PrefetchImage | None:
    entry: dict[str, Any] = {"image": item} if isinstance(item, str) else \
        fields.section(item, key, {"image", "platforms"}, p)
    text = entry.get("image")
    if not isinstance(text, str):
        p.add(f"{key}: expected an image reference or a mapping with image and platforms")
        return None
    problem = reference_problem(text, names)
    if problem is not None:
        p.add(f"{key}: {problem}")
        return None
    ref = ImageReference.parse(text)
    if ref.digest or not ref.tag:
        p.add(f"{key}: {show(text)} must name a tag (a digest never moves)")
        return None
    raw_platforms = entry.get("platforms", [])
    if not isinstance(raw_platforms, list) or not all(isinstance(x, str) for x in raw_platforms):
        p.add(f"{key}.platforms: expected a list such as [linux/amd64]")
        return None
    try:
        platforms = tuple(Platform.parse(x) for x in raw_platforms)
    except ConfigError as exc:
        p.add(f"{key}.platforms: {str(exc).removeprefix('--platform: ')}")
        return None
    return PrefetchImage(text, platforms)
