"""Reading the configuration file: bounded, UTF-8, and YAML without its silent surprises.

PyYAML keeps the last of two equal keys without a word (an operator who sets `listen:` twice
runs the first block's values nowhere), recurses once per nesting level (a deep document ends
in RecursionError), and hands number and date texts to `int()` and `datetime()`, which raise
their own errors. Each of those becomes one line here, and duplicate keys are reported with the
validation problems rather than instead of them.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError

from edgecache.configvalues import InvalidConfig, show

MAX_BYTES = 1 << 20  # a configuration is a few KiB; a megabyte is a wrong file
MAX_DEPTH = 32  # the deepest real key path is three levels
MAX_NUMBER_TEXT = 40
MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys and refuses deep nesting and long numbers."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.duplicates: list[str] = []
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:  # before merges: an explicit key may override one
                if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
                    continue
                line = key_node.start_mark.line + 1
                first = seen.setdefault((key_node.tag, key_node.value), line)
                if first != line:
                    self.duplicates.append(
                        f"line {line}: duplicate key {show(key_node.value)} (first on line "
                        f"{first}); YAML would silently keep only the last")
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        if len(node.value) > MAX_NUMBER_TEXT:
            raise ConstructorError(None, None, f"a number {len(node.value)} characters long",
                                   node.start_mark)
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def read_document(path: str) -> tuple[object, list[str]]:
    """The parsed document (None when empty) and the duplicate-key problems found in it."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidConfig([f"{path}: cannot read config: {exc.strerror or exc}"]) from exc
    if len(data) > MAX_BYTES:
        raise InvalidConfig([f"{path}: larger than {MAX_BYTES // 1024} KiB: not a config"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidConfig([f"{path}: not UTF-8 text (byte {exc.start} is "
                             f"0x{data[exc.start]:02x})"]) from None
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)  # refuses control characters already
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise InvalidConfig([f"{path}: invalid YAML{_where(exc)}"]) from None
    except (ValueError, OverflowError) as exc:  # PyYAML's int(), float() and datetime()
        raise InvalidConfig([f"{path}: invalid YAML: {str(exc)[:100]}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return document, sorted(loader.duplicates, key=lambda d: int(d.split(":")[0][5:]))


def _where(exc: yaml.YAMLError) -> str:
    if isinstance(exc, ReaderError):
        return f" at character {exc.position}: {exc.reason} (#x{exc.character:04x})"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return where + (f": {str(problem)[:100]}" if problem else "")
