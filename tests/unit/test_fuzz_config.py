"""Fuzzing the configuration with hypothesis: whatever the file holds, loading it either gives
a Config whose values the server can use, or raises InvalidConfig whose problems are each one
printable line; `edgecache check-config` never prints a traceback.

1. Random documents built from the real section and field names, with values that have broken
   things before (`.nan`, `.inf`, 300-digit numbers, bare small sizes, userinfo URLs, hosts with
   spaces, booleans where strings go, nesting where scalars go) and plain random ones.
2. Mutations of config.example.yaml's text (YAML punctuation, anchors, aliases, tags, tabs,
   duplicate keys, NUL and non-UTF-8 bytes spliced in) and random bytes, through `load`.
3. A few of those files through the real `edgecache check-config` in a subprocess.

Bounded for CI: derandomized (the same examples every run), ~10 s in all. Run longer locally:

    EDGECACHE_FUZZ_EXAMPLES=5000 EDGECACHE_FUZZ_RANDOM=1 .venv/bin/pytest \\
        tests/unit/test_fuzz_config.py
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgecache import config as config_mod
from edgecache.config import Config, InvalidConfig, parse_hostport
from edgecache.configvalues import MAX_DURATION, MAX_SIZE

EXAMPLES = int(os.environ.get("EDGECACHE_FUZZ_EXAMPLES", "300"))
DERANDOMIZE = os.environ.get("EDGECACHE_FUZZ_RANDOM", "") != "1"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_TEXT = (ROOT / "config.example.yaml").read_text(encoding="utf-8")

FUZZ = settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=DERANDOMIZE,
                database=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
FILES = settings(FUZZ, max_examples=EXAMPLES)
CLI = settings(FUZZ, max_examples=max(4, EXAMPLES // 50))

FIELDS: dict[str, list[str]] = {
    "listen": ["http", "https", "shutdown_timeout", "idle_timeout"],
    "tls": ["cert_file", "key_file", "extra_names", "client_ca_file"],
    "auth": ["htpasswd_file", "tokens_file", "realm"],
    "storage": ["path", "max_size", "min_free", "high_watermark", "low_watermark",
                "access_flush_interval"],
    "cache": ["tag_ttl", "revalidate_timeout", "negative_ttl"],
    "health": ["failure_threshold", "probe_min_interval", "probe_max_interval"],
    "log": ["level", "format"],
    "metrics": ["listen"],
    "limits": ["max_downloads", "max_readers_per_blob"],
}
UPSTREAM_FIELDS = ["url", "username", "password_file", "connect_timeout", "response_timeout",
                   "read_timeout", "access", "password"]
UPSTREAM_NAMES = ["docker.io", "ghcr.io", "GHCR.IO", "Docker.io", "registry.test:5000", "..",
                  "-bad-", "a..b", "x.io:0", "x.io:99999", "localhost", "127.0.0.1:5000",
                  "x.io:\u0663", "h\u00e9.io", ""]

# ---- values that have broken a loader before, and random ones --------------------------------

TRICKY_STRINGS = [
    "30s", "500ms", "5m", "1h", "1d", "0s", "-1s", "1e3s", "400d", "1" + "0" * 300 + "s",
    "20GiB", "500MB", "1.5G", "0", "5", "5B", "80%", "0%", "101%", "1e400%", "9" * 300,
    "9" * 5000, "0GiB", "0.0001B",
    "127.0.0.1:5000", "[::1]:5000", "::1:5000", ":0", "bad host:5000", "[x]:1", "h:",
    "127.0.0.1:" + "0" * 5000, "0.0.0.0:9630", "localhost:0", "[fe80::1%eth0]:5000",
    "https://registry-1.docker.io", "http://:secret@x.io", "http://@x.io", "http://u@x.io",
    "https://x.io:99999", "https://x .io", "https://x.io/\n[x]", "https://[::1]:5000/v2/",
    "ftp://x.io", "https://x.io?q=1", "https://x.io#f", "https://", "//x.io", "http://[::1",
    "debug", "INFO", "json", "plain", "public", "authenticated", "edgecache", 'a"b',
    "a\r\nb", "\x00", "/nonexistent/file", "/dev/null", "", " ", "\u2028", "\ud7ff",
    "docker.io/library/nginx:1.27", "docker.io/x@sha256:" + "ab" * 32, "elsewhere.io/x:1",
    "GHCR.IO/team/app:1", "docker.io/BAD NAME",
]
TRICKY_NUMBERS: list[Any] = [0, 1, -1, 5, 65535, 65536, 2 ** 31, 2 ** 63, 10 ** 300, -10 ** 300,
                             0.5, 1.0, 1.5, -0.0, float("nan"), float("inf"), float("-inf"),
                             1e308, 5e-324]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(TRICKY_STRINGS), st.sampled_from(TRICKY_NUMBERS),
    st.integers(), st.floats(), st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(sorted({f for fs in FIELDS.values() for f in fs}
                                        | set(FIELDS) | set(UPSTREAM_FIELDS))),
                 st.text(max_size=12), st.integers(-3, 3), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=4)


def section(name: str) -> st.SearchStrategy[Any]:
    fields = st.dictionaries(st.sampled_from(FIELDS[name]) | keys, values, max_size=4)
    return st.one_of(fields, fields, fields, values)


upstream_sections = st.dictionaries(
    st.sampled_from(UPSTREAM_NAMES) | keys,
    st.dictionaries(st.sampled_from(UPSTREAM_FIELDS) | keys, values, max_size=4) | values,
    max_size=3)
documents = st.one_of(
    st.fixed_dictionaries({}, optional={
        **{name: section(name) for name in FIELDS},
        "upstreams": upstream_sections,
        "default_upstream": st.sampled_from(UPSTREAM_NAMES) | values,
        "pins": st.lists(st.sampled_from(TRICKY_STRINGS) | scalars, max_size=3) | values,
    }),
    values,
)


# ---- the property ------------------------------------------------------------------------------

def check_problems(exc: InvalidConfig) -> None:
    assert exc.problems, "an InvalidConfig must say what is wrong"
    for problem in exc.problems:
        assert isinstance(problem, str) and problem.isprintable(), repr(problem)
        assert ": " in problem and len(problem) < 600, problem
        assert not (".url:" in problem and "secret" in problem), problem  # never echo a password


def check_config(cfg: Config) -> None:
    """What the server relies on: every value usable as it stands."""
    durations = [cfg.listen.shutdown_timeout, cfg.listen.idle_timeout, cfg.cache.tag_ttl,
                 cfg.cache.revalidate_timeout, cfg.cache.negative_ttl,
                 cfg.health.probe_min_interval, cfg.health.probe_max_interval,
                 cfg.storage.access_flush_interval]
    for upstream in cfg.upstreams.values():
        durations += [upstream.connect_timeout, upstream.response_timeout, upstream.read_timeout]
        assert min(upstream.connect_timeout, upstream.response_timeout,
                   upstream.read_timeout) > 0
        assert upstream.name == upstream.name.lower()
        assert "@" not in upstream.url and upstream.url.startswith(("http://", "https://"))
    assert all(math.isfinite(d) and 0 <= d <= MAX_DURATION for d in durations), durations
    for size in (cfg.storage.max_size, cfg.storage.min_free):
        if size is not None and size.bytes is not None:
            assert 0 <= size.bytes <= MAX_SIZE
    assert cfg.storage.max_size is None or cfg.storage.max_size.resolve(1 << 40) > 0
    for address in (cfg.listen.http, cfg.listen.https, cfg.metrics.listen):
        if address is not None:
            parse_hostport(address, "listen")
    assert cfg.listen.http or cfg.listen.https
    assert cfg.default_upstream is None or cfg.default_upstream in cfg.upstreams
    assert all(pin.split("/", 1)[0].lower() in cfg.upstreams for pin in cfg.pins)


def load_checked(path: str) -> None:
    try:
        cfg = config_mod.load(path)
    except InvalidConfig as exc:
        check_problems(exc)
    else:
        check_config(cfg)


@FUZZ
@given(raw=documents)
@example(raw={"cache": {"revalidate_timeout": float("nan")}})
@example(raw={"storage": {"max_size": "9" * 300, "min_free": 5}})
@example(raw={"upstreams": {"x.io": {"url": "http://:secret@x.io"}}})
@example(raw={"upstreams": {"GHCR.IO": {"url": "https://ghcr.io"}}, "pins": ["ghcr.io/a:1"]})
def test_from_mapping_gives_a_usable_config_or_one_line_problems(raw: object) -> None:
    try:
        cfg = config_mod.from_mapping(raw)
    except InvalidConfig as exc:
        check_problems(exc)
    else:
        check_config(cfg)


# ---- files: mutations of the example, and random bytes ---------------------------------------

SPLICES = [":", ": ", "- ", "-", "&a ", "*a", "<<: *a\n", "!!binary ", "!!python/name:os ", "\t",
           "{", "}", "[", "]", "'", '"', "#", "\n", "\n  ", "\n---\n", "? ", "|", ">", "%",
           "~", ".nan", ".inf", "-.inf", "9" * 60, "0x1F", "0o7", "1_000", "2001-13-45",
           "yes", "null", "\x00", "\ufeff", "\u0085", "listen:", "  http: x\n", "upstreams: ",
           "\n\n" + "[" * 200]


@st.composite
def mutated_example(draw: st.DrawFn) -> bytes:
    text = EXAMPLE_TEXT
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 20))
        insert = draw(st.sampled_from(SPLICES) | st.text(max_size=6))
        text = text[:where] + insert + text[where + cut:]
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # now and then a byte that is not UTF-8
        where = draw(st.integers(0, len(data)))
        data = data[:where] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) \
            + data[where:]
    return data


files = st.one_of(mutated_example(), mutated_example(), st.binary(max_size=300),
                  st.builds(lambda doc: yaml.safe_dump(doc, allow_unicode=True).encode(),
                            documents))


@FILES
@given(data=files)
@example(data=b"log:\n  level: \"\xff\xfe\"\n")
@example(data=b"listen: " + b"[" * 3000 + b"]" * 3000 + b"\n")
@example(data=b"storage:\n  max_size: " + b"9" * 5000 + b"\n")
@example(data=b"listen:\n  http: '127.0.0.1:5000'\n  http: '127.0.0.1:5001'\n")
def test_loading_any_file_gives_a_usable_config_or_one_line_problems(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "edgecache.yaml"
        path.write_bytes(data)
        load_checked(str(path))


# ---- the CLI: a few files through check-config in a subprocess --------------------------------

@CLI
@given(data=files)
@example(data=b"cache:\n  revalidate_timeout: .nan\nstorage: {min_free: 5}\n")
@example(data=b"\xff\xfe\x00")
def test_check_config_never_prints_a_traceback(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "edgecache.yaml"
        path.write_bytes(data)
        result = subprocess.run([sys.executable, "-m", "edgecache", "check-config", "--config",
                                 str(path)], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 2), (result.returncode, result.stderr)
    if result.returncode == 0:
        assert result.stderr == "" and " ok (" in result.stdout
    else:
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith("edgecache: config: ") for line in lines), lines
