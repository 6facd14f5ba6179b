"""Issue 23, finding 13: locating keys is linear in the length of multi-line values.

An 8000-line inline AppArmor profile took 83 s to validate: every added line of a multi-line
value was handed to tomllib again. The proof here is structural (how often tomllib is asked),
never a timing.
"""

from __future__ import annotations

import tomllib

import pytest

from converge import tomlsource
from converge.tomlsource import SourceMap


def _profile(lines: int) -> str:
    body = "\n".join(f"  /srv/www/{index} r,  # a = b \"\"" for index in range(lines))
    return f'[apparmor.profiles.nginx]\nmode = "enforce"\ncontent = """\n{body}\n"""\nafter = 1\n'


def test_a_long_value_is_scanned_once_not_reparsed_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = tomllib.loads
    monkeypatch.setattr(tomlsource.tomllib, "loads", lambda source: calls.append(1) or real(source))
    SourceMap(_profile(3000))
    assert len(calls) < 10  # one per key and header, none per line of the value


def test_a_20000_line_value_is_located() -> None:
    lines = SourceMap(_profile(20000))
    assert lines.line_of(("apparmor", "profiles", "nginx", "content")) == 3
    assert lines.line_of(("apparmor", "profiles", "nginx", "after")) == 20000 + 5


def test_values_that_look_closed_or_open_are_measured_right() -> None:
    text = (
        'a = [\n  "]",  # ]\n  \'[\',\n]\n'
        "b = '''\nx = 1 ''\n'''\n"
        'c = """\nescaped \\""" still open\n"""""\n'
        'd = { e = "{" }\n'
        "f = 2\n"
    )
    assert tomllib.loads(text)["c"] == 'escaped """ still open\n""'
    lines = SourceMap(text)
    assert [lines.line_of((key,)) for key in "abcdf"] == [1, 5, 8, 11, 12]
    assert lines.line_of(("x",)) is None
