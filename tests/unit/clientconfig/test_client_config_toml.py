"""The TOML writer used to merge into hosts.toml: what tomllib reads, it writes back the same,
and containerd's host entries come out as one inline table per line (go-toml v1 rejects a
table header holding `]`, as in an IPv6 URL)."""

from __future__ import annotations

import datetime
import tomllib

from hypothesis import given
from hypothesis import strategies as st

from edgecache.clientconfig.tomlwrite import dumps

SCALARS = (st.text() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False) | st.dates() | st.times()
           | st.datetimes(timezones=st.none() | st.just(datetime.UTC)))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)


@given(st.dictionaries(st.text(), VALUES, max_size=6))
def test_what_tomllib_reads_is_written_back_the_same(doc: dict[str, object]) -> None:
    assert tomllib.loads(dumps(doc)) == doc
    assert tomllib.loads(dumps({"host": doc}, inline=frozenset({"host"}))) == {"host": doc}


def test_hosts_are_inline_tables_one_per_line_in_order() -> None:
    doc = {"server": "https://registry-1.docker.io",
           "host": {"https://[::1]:30003": {"capabilities": ["pull", "resolve"],
                                            "header": {"X-A": ["1", "2"]}},
                    "http://127.0.0.1:30080": {"capabilities": ["pull"]}}}
    text = dumps(doc, inline=frozenset({"host"}), header="# mine")
    assert text == (
        '# mine\nserver = "https://registry-1.docker.io"\n\n[host]\n'
        '  "https://[::1]:30003" = { capabilities = ["pull", "resolve"], '
        'header = { X-A = ["1", "2"] } }\n'
        '  "http://127.0.0.1:30080" = { capabilities = ["pull"] }\n')
    assert "[host." not in text
    assert tomllib.loads(text) == doc
