from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecache import config
from edgecache.errors import ConfigError
from edgecache.proxy.routing import Router


def test_embedded_defaults() -> None:
    cfg = config.load(None)
    assert cfg.listen.http == "127.0.0.1:5000"
    assert cfg.storage.path == Path("/var/lib/edgecache")
    assert set(cfg.upstreams) == {"docker.io", "ghcr.io", "registry.k8s.io", "quay.io"}
    assert cfg.default_upstream == "docker.io"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    cfg = config.load(str(example))
    assert "docker.io" in cfg.upstreams


@pytest.mark.parametrize(("value", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), (12, 12), (1.5, 1.5), ("2", 2),
    ("1m30s", 90), ("2h", 7200), ("1h30m", 5400), ("1m500ms", 60.5), ("1d2h3m4s5ms", 93784.005),
    (" 1h30m ", 5400), ("1.5h30s", 5430), ("5 m", 300),
])
def test_durations(value: object, seconds: float) -> None:
    assert config.parse_duration(value, "k") == seconds


@pytest.mark.parametrize("value", ["soon", "-1s", True, None, "5 minutes", [1], "30s1m", "1m1m",
                                   "1m 30s", "1m30", "m", "1h-30m", "1ms5s", "400d", "364d2d"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^k: "):
        config.parse_duration(value, "k")


@pytest.mark.parametrize(("raw", "key"), [
    ({"listen": {"https": "x"}}, "listen.https"),
    ({"bogus": 1}, "bogus"),
    ({"listen": {"http": 5000}}, "listen.http"),
    ({"listen": {"http": "localhost"}}, "listen.http"),
    ({"listen": {"http": "127.0.0.1:\u00b2"}}, "listen.http"),  # a digit to isdigit(), not int()
    ({"storage": {"path": 3}}, "storage.path"),
    ({"upstreams": {"x.io": {"url": "ftp://x.io"}}}, "upstreams.x.io.url"),
    ({"upstreams": {"x.io": {"url": "https://u:p@x.io"}}}, "upstreams.x.io.url"),
    ({"upstreams": {"x.io": {"url": "https://x.io", "colour": 1}}}, "upstreams.x.io.colour"),
    ({"upstreams": {"x.io": {"url": "https://x.io", "username": "u",
                             "password_file": "/nonexistent/pw"}}}, "upstreams.x.io.password_file"),
    ({"upstreams": {"x.io": {"url": "https://x.io", "read_timeout": "forever"}}},
     "upstreams.x.io.read_timeout"),
    ({"upstreams": {"x.io": {"url": "https://x.io"}}, "default_upstream": "y.io"},
     "default_upstream"),
    ({"upstreams": {}}, "upstreams"),
    ({"log": {"level": "loud"}}, "log.level"),
])
def test_errors_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping(raw)
    message = str(info.value)
    assert message.startswith(key + ":") or message.startswith(key + " ")
    assert "\n" not in message


def test_credentials_read_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = config.from_mapping({"upstreams": {"x.io": {
        "url": "https://x.io/", "username": "me", "password_file": str(secret),
        "access": "public"}}})
    upstream = cfg.upstreams["x.io"]
    assert upstream.url == "https://x.io"
    assert upstream.password() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.default_upstream is None


def test_invalid_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        config.load(str(bad))
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(str(tmp_path / "missing.yaml"))


# ---- every value that would fail later is refused here, in one line naming its key ------------

def upstream(**settings: object) -> dict[str, object]:
    return {"upstreams": {"x.io": {"url": "https://x.io", **settings}}, "default_upstream": None}


# (raw config, the key the one-line error must start with)
REFUSED = [
    ({"cache": {"revalidate_timeout": float("nan")}}, "cache.revalidate_timeout"),
    ({"cache": {"tag_ttl": float("inf")}}, "cache.tag_ttl"),
    ({"cache": {"tag_ttl": "1" + "0" * 300 + "s"}}, "cache.tag_ttl"),
    ({"cache": {"tag_ttl": 10 ** 300}}, "cache.tag_ttl"),
    ({"cache": {"tag_ttl": "400d"}}, "cache.tag_ttl"),
    ({"cache": {"negative_ttl": float("nan")}}, "cache.negative_ttl"),
    ({"listen": {"shutdown_timeout": float("-inf")}}, "listen.shutdown_timeout"),
    ({"storage": {"max_size": "9" * 300}}, "storage.max_size"),
    ({"storage": {"max_size": 10 ** 300}}, "storage.max_size"),
    ({"storage": {"max_size": "9" * 300 + "GiB"}}, "storage.max_size"),
    ({"storage": {"max_size": 0}}, "storage.max_size"),
    ({"storage": {"max_size": "0GiB"}}, "storage.max_size"),
    ({"storage": {"min_free": 5}}, "storage.min_free"),
    ({"storage": {"min_free": "500"}}, "storage.min_free"),
    ({"storage": {"min_free": "1" + "0" * 400 + "%"}}, "storage.min_free"),
    ({"storage": {"high_watermark": float("nan")}}, "storage.high_watermark"),
    ({"storage": {"path": "/srv/a\x00b"}}, "storage.path"),
    ({"listen": {"http": "bad host:5000"}}, "listen.http"),
    ({"listen": {"http": "::1:5000"}}, "listen.http"),  # IPv6 goes in brackets
    ({"listen": {"http": "[not-v6]:5000"}}, "listen.http"),
    ({"listen": {"http": "127.0.0.1:" + "0" * 5000}}, "listen.http"),
    ({"listen": {"http": "127.0.0.1:5000", "https": "0.0.0.0:5000"}}, "listen.https"),
    ({"metrics": {"listen": "127.0.0.1:5000"}}, "metrics.listen"),  # listen.http's port
    ({"metrics": {"listen": "h\u00e9:9630"}}, "metrics.listen"),
    (upstream(url="http://:secret@x.io"), "upstreams.x.io.url"),
    (upstream(url="http://@x.io"), "upstreams.x.io.url"),
    (upstream(url="http://user@x.io"), "upstreams.x.io.url"),
    (upstream(url="https://x.io:99999"), "upstreams.x.io.url"),
    (upstream(url="https://x.io/\n[host]"), "upstreams.x.io.url"),
    (upstream(url="https://x .io"), "upstreams.x.io.url"),
    (upstream(url="https://x.io?a=1"), "upstreams.x.io.url"),
    (upstream(url=True), "upstreams.x.io.url"),
    (upstream(connect_timeout=0), "upstreams.x.io.connect_timeout"),
    (upstream(response_timeout="0s"), "upstreams.x.io.response_timeout"),
    (upstream(access=True), "upstreams.x.io.access"),
    ({"upstreams": {"..": {"url": "https://x.io"}}, "default_upstream": None}, "upstreams.'..'"),
    ({"upstreams": {"x.io:\u0663": {"url": "https://x.io"}}, "default_upstream": None},
     "upstreams.'x.io:\u0663'"),
    ({"upstreams": {"x.io": {"url": "https://x.io"}, "X.IO": {"url": "https://x.io"}},
      "default_upstream": None}, "upstreams.X.IO"),
    ({"upstreams": {True: {"url": "https://x.io"}}, "default_upstream": None},
     "upstreams.True"),
    ({"upstreams": {"x.io": None}, "default_upstream": None}, "upstreams.x.io"),
    ({"default_upstream": False}, "default_upstream"),
    ({"log": {"level": True}}, "log.level"),
    ({"log": {"format": "xml"}}, "log.format"),
    ({"health": {"failure_threshold": 10 ** 300}}, "health.failure_threshold"),
    ({"health": {"probe_min_interval": float("nan")}}, "health.probe_min_interval"),
    ({"limits": {"max_downloads": 10 ** 300}}, "limits.max_downloads"),
    ({"limits": {"max_readers_per_blob": 1.5}}, "limits.max_readers_per_blob"),
    ({"auth": {"realm": "edge\r\nX-Injected: 1"}}, "auth.realm"),
    ({"tls": {"extra_names": ["mirror.site", "not a name"]}}, "tls.extra_names"),
    ({"tls": {"cert_file": "/nonexistent/cert.pem", "key_file": __file__}}, "tls.cert_file"),
    ({"pins": ["docker.io/library/nginx:bad tag"]}, "pins[0]"),
    ({"pins": ["elsewhere.io/app:1"]}, "pins[0]"),
    ("listen: 1", "top level"),
    ([{"listen": None}], "top level"),
    ({"a\nb": 1}, "'a\\nb'"),
    ({"listen": [[[[1]]]]}, "listen"),
]


@pytest.mark.parametrize(("raw", "key"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_refusals_are_one_line_naming_the_key(raw: object, key: str) -> None:
    with pytest.raises(config.InvalidConfig) as info:
        config.from_mapping(raw)
    assert len(info.value.problems) == 1, info.value.problems
    message = info.value.problems[0]
    assert message.startswith(key + ":"), message
    assert "\n" not in message and "\r" not in message and len(message) < 300
    assert "secret" not in message


def test_every_problem_is_reported_at_once() -> None:
    raw = {"listen": {"http": "bad host:1", "idle_timeout": "soon"},
           "storage": {"min_free": 5, "max_size": 0, "colour": "red"},
           "upstreams": {"x.io": {"url": "http://:secret@x.io", "read_timeout": -1},
                         "y.io": {"url": "https://y.io"}},
           "default_upstream": "z.io",
           "cache": {"revalidate_timeout": float("nan")},
           "log": {"level": "loud"}}
    with pytest.raises(config.InvalidConfig) as info:
        config.from_mapping(raw)
    keys = [problem.split(":", 1)[0] for problem in info.value.problems]
    assert keys == ["listen.http", "listen.idle_timeout", "storage.colour", "storage.max_size",
                    "storage.min_free", "upstreams.x.io.url", "upstreams.x.io.read_timeout",
                    "default_upstream", "cache.revalidate_timeout", "log.level"]
    assert all("\n" not in problem for problem in info.value.problems)


def test_a_bad_upstream_is_reported_once_not_again_by_what_names_it() -> None:
    with pytest.raises(config.InvalidConfig) as info:
        config.from_mapping({"upstreams": {"x.io": {"url": "ftp://x.io"}},
                             "default_upstream": "x.io", "pins": ["x.io/app:1"]})
    assert [p.split(":", 1)[0] for p in info.value.problems] == ["upstreams.x.io.url"]


def test_upstream_names_are_lower_cased_like_the_router_does() -> None:
    """Host names are case-insensitive and the router lower-cases what clients send: an
    upstream configured as `GHCR.IO` must be the one `ghcr.io` reaches, not a dead entry."""
    cfg = config.from_mapping({"upstreams": {"GHCR.IO": {"url": "https://ghcr.io"},
                                             "Registry.Example:5000": {"url": "https://r.test"}},
                               "default_upstream": "Ghcr.Io",
                               "pins": ["GHCR.io/team/app:1"]})
    assert set(cfg.upstreams) == {"ghcr.io", "registry.example:5000"}
    assert cfg.upstreams["ghcr.io"].name == "ghcr.io"
    assert cfg.default_upstream == "ghcr.io"
    target = Router(cfg.upstreams, cfg.default_upstream).resolve(
        "GHCR.IO/team/app/manifests/1", None)
    assert target.upstream == "ghcr.io"


@pytest.mark.parametrize(("value", "expected"), [
    ("0", config.Size(bytes=0)), (0, config.Size(bytes=0)), ("5B", config.Size(bytes=5)),
    ("5%", config.Size(percent=5.0)), (2 * 1024 * 1024, config.Size(bytes=2 * 1024 * 1024)),
    ("1.5KiB", config.Size(bytes=1536)), ("20GB", config.Size(bytes=20 * 10 ** 9)),
])
def test_sizes_a_unit_or_a_byte_count_of_at_least_a_mebibyte(value: object,
                                                             expected: config.Size) -> None:
    assert config.parse_size(value, "k") == expected


def test_upstream_url_keeps_a_path_and_drops_the_trailing_slash() -> None:
    cfg = config.from_mapping(upstream(url="https://[::1]:5000/mirror/"))
    assert cfg.upstreams["x.io"].url == "https://[::1]:5000/mirror"


def test_listeners_may_share_port_zero_and_use_ipv6_brackets() -> None:
    cfg = config.from_mapping({"listen": {"http": "127.0.0.1:0", "https": "[::1]:0"},
                               "metrics": {"listen": "localhost:0"}})
    assert config.parse_hostport(cfg.listen.https or "", "k") == ("::1", 0)


# ---- the file: encoding, YAML surprises ---------------------------------------------------------

def write(tmp_path: Path, data: bytes | str) -> str:
    path = tmp_path / "edgecache.yaml"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize(("data", "expected"), [
    (b"log:\n  level: \"\xff\xfe\"\n", r"not UTF-8 text \(byte 15 is 0xff\)"),
    ("listen: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML at line 1: nested more than"),
    ("storage:\n  max_size: " + "9" * 5000 + "\n", "invalid YAML at line 2: a number 5000"),
    ("cache:\n  tag_ttl: 2001-13-45\n", "invalid YAML: month must be in 1..12"),
    ("a: 1\n---\nb: 2\n", "invalid YAML at line 2"),
    ("x: !!python/object:os.system {}\n", "invalid YAML at line 1"),
    ("# " + "x" * (2 << 20) + "\n", "larger than 1024 KiB"),
])
def test_a_file_that_is_not_a_plain_yaml_mapping(tmp_path: Path, data: bytes | str,
                                                 expected: str) -> None:
    with pytest.raises(config.InvalidConfig) as info:
        config.load(write(tmp_path, data))
    assert len(info.value.problems) == 1
    assert re.search(expected, info.value.problems[0]), info.value.problems[0]
    assert "\n" not in info.value.problems[0]


def test_duplicate_keys_are_reported_with_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "listen:\n  http: '127.0.0.1:5000'\n  http: '127.0.0.1:5001'\n"
                           "log: {level: loud}\nlisten: {}\n")
    with pytest.raises(config.InvalidConfig) as info:
        config.load(path)
    assert info.value.problems == (
        "line 3: duplicate key 'http' (first on line 2); YAML would silently keep only the last",
        "line 5: duplicate key 'listen' (first on line 1); YAML would silently keep only the "
        "last",
        "log.level: expected debug, info, warning or error, got 'loud'")


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams:\n"
                           "  a.io: &base {url: 'https://a.io', read_timeout: 30s}\n"
                           "  b.io: {<<: *base, url: 'https://b.io'}\n"
                           "default_upstream: a.io\n")
    cfg = config.load(path)
    assert cfg.upstreams["b.io"].url == "https://b.io"
    assert cfg.upstreams["b.io"].read_timeout == 30


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    path = write(tmp_path, "\n".join(levels) + "\nlisten: {http: *a11}\n")
    with pytest.raises(config.InvalidConfig) as info:
        config.load(path)
    assert [p.split(":", 1)[0] for p in info.value.problems] == [
        *(f"a{i}" for i in range(12)), "listen.http"]


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "# nothing set\n")) == config.load(None)
