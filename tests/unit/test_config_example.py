"""config.example.yaml is the reference an operator reads: every key the parser accepts and
every field of the Config dataclasses must be mentioned in it, at its place, and the file
must load.

A key counts as mentioned when it appears as a key at its path, or commented out at its path:
a line `# key: value` read as if the `# ` were removed (so `  # realm: "x"` under `auth:` is
`auth.realm`, and `#   peers:` under `# cluster:` is `cluster.peers`). Commenting is for keys
that have no default worth writing (a file that must exist, a section off by default).

The accepted keys come from the parser itself, not a list kept here: each section is probed
with an unknown key and the "allowed: ..." of its refusal is read; so a section another module
adds (`cluster`, `local`, `prefetch`) is checked as soon as `build()` parses it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Union

from edgecache import config
from edgecache.config import Config, Size
from edgecache.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
PROBE = "zz-probe"
WILD = "*"  # an entry of a mapping keyed by the operator (upstream names)
# dataclass fields that are not keys of the file
NOT_KEYS = {("upstreams", WILD, "name"), ("cluster", "self_url"),  # `cluster.self`
            ("cluster", "listen")}  # `listen.peer`
# dataclasses whose fields are keys of the section above them with a prefix (`local.gc_grace`)
PREFIXED = {("local", "gc"): "gc_"}
VALUES = (Size,)  # dataclasses that are one value (`min_free: 5%`), not a section
_ALLOWED = re.compile(r"unknown key \(allowed: ([^)]*)\)")
_KEY_LINE = re.compile(r"^(?P<indent>[ -]*)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*):(?:\s|$)")

Path_ = tuple[str, ...]


def _problems(raw: object) -> tuple[str, ...]:
    try:
        config.from_mapping(raw)
    except config.InvalidConfig as exc:
        return exc.problems
    except ConfigError as exc:
        return (str(exc),)
    return ()


def _allowed(raw: object, where: str) -> set[str] | None:
    """The keys the parser accepts at `where`, read from its refusal of an unknown key there."""
    prefix = f"{where}.{PROBE}: " if where else f"{PROBE}: "
    for problem in _problems(raw):
        if problem.startswith(prefix) and (m := _ALLOWED.search(problem)):
            return {name.strip() for name in m.group(1).split(",")}
    return None


def _nest(path: Path_, leaf: object) -> object:
    """{path[0]: {path[1]: ... leaf}}, with an upstream entry where the path has WILD."""
    value = leaf
    for i in range(len(path) - 1, -1, -1):
        if path[i] == WILD:
            assert isinstance(value, dict)
            value = {"x.io": {"url": "https://x.io", **value}}
        else:
            value = {path[i]: value}
    return value


def parser_keys() -> set[Path_]:
    """Every key path the parser accepts, mappings within mappings included."""
    keys: set[Path_] = set()
    todo: list[Path_] = [()]
    while todo:
        path = todo.pop()
        where = ".".join("x.io" if part == WILD else part for part in path)
        allowed = _allowed(_nest(path, {PROBE: 1}), where)
        if allowed is None and path and path[-1] != WILD:  # a mapping keyed by the operator?
            if _allowed(_nest((*path, WILD), {PROBE: 1}), f"{where}.x.io") is not None:
                todo.append((*path, WILD))
            continue
        for name in allowed or ():
            keys.add((*path, name))
            if len(path) < 4:
                todo.append((*path, name))
    return keys


def _classes() -> dict[str, type]:
    """Every class the loaded edgecache modules define: the names a section's annotation may
    use under TYPE_CHECKING only (`local: LocalConfig | None`), once the parser imported them."""
    import edgecache.configsections  # noqa: F401 - imports every section's settings module

    return {name: value for module_name, module in list(sys.modules.items())
            if module_name.startswith("edgecache") and module is not None
            for name, value in vars(module).items() if isinstance(value, type)}


def dataclass_keys(cls: type = Config, path: Path_ = ()) -> Iterator[Path_]:
    module = sys.modules[cls.__module__]
    hints = typing.get_type_hints(cls, globalns={**_classes(), **vars(module)})
    for item in dataclasses.fields(cls):
        here = (*path, item.name)
        if path in PREFIXED:
            here = (*path[:-1], PREFIXED[path] + item.name)
        if here not in PREFIXED:
            yield here
        kind = hints[item.name]
        if typing.get_origin(kind) in (Mapping, dict):
            value = typing.get_args(kind)[1]
            if dataclasses.is_dataclass(value):
                yield from dataclass_keys(value, (*here, WILD))  # type: ignore[arg-type]
        elif typing.get_origin(kind) in (Union, UnionType):  # `LocalConfig | None`: a section
            for member in typing.get_args(kind):
                if dataclasses.is_dataclass(member) and member not in VALUES:
                    yield from dataclass_keys(member, here)  # type: ignore[arg-type]
        elif dataclasses.is_dataclass(kind) and kind not in VALUES:
            yield from dataclass_keys(kind, here)  # type: ignore[arg-type]


def mentioned(text: str, wild: set[Path_]) -> set[Path_]:
    """The key paths the file names, commented-out ones included (see the module docstring)."""
    found: set[Path_] = set()
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        if body.startswith("#"):
            body = " " * (len(line) - len(body)) + body[1:].removeprefix(" ")
        else:
            body = line
        m = _KEY_LINE.match(body)
        if m is None:
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = tuple(name for _, name in stack)
        key = WILD if parents in wild else m.group("key")
        found.add((*parents, key))
        stack.append((indent, key))
    return found


def test_the_parser_and_the_dataclasses_agree_on_the_sections() -> None:
    sections = {path[0] for path in parser_keys()}
    fields = {path[0] for path in dataclass_keys()}
    assert sections == fields


def test_every_key_is_in_config_example() -> None:
    expected = parser_keys() | (set(dataclass_keys()) - NOT_KEYS)
    wild = {path[:i] for path in expected for i, part in enumerate(path) if part == WILD}
    names = mentioned(EXAMPLE.read_text(encoding="utf-8"), wild)
    missing = sorted(".".join(path) for path in expected - names if path[-1] != WILD)
    assert not missing, f"config.example.yaml does not mention: {', '.join(missing)}"


def test_the_walk_finds_what_a_section_accepts() -> None:
    """The probe is real: it finds keys the parser knows (so an empty walk cannot pass)."""
    keys = parser_keys()
    assert ("listen", "idle_timeout") in keys
    assert ("upstreams", WILD, "access") in keys
    assert ("tls", "client_ca_file") in keys
    assert ("upstreams", WILD, "name") in set(dataclass_keys())


def test_a_key_only_in_a_comment_counts_and_a_misplaced_one_does_not() -> None:
    text = "auth:\n  # realm: x\nlisten:\n  http: a\n# cluster:\n#   peers: []\nrealm: 1\n"
    names = mentioned(text, set())
    assert ("auth", "realm") in names
    assert ("cluster", "peers") in names
    assert ("listen", "realm") not in names


def test_config_example_loads() -> None:
    loaded = config.load(str(EXAMPLE))
    assert loaded.listen.idle_timeout == 30.0
    assert set(loaded.upstreams) >= {"docker.io", "ghcr.io"}
