from __future__ import annotations

from converge.tomlsource import SourceMap, format_key

TEXT = '''\
# comment
[baseline]
name = "x"
extends = [
  "a.toml",
  "b.toml",
]

[sysctl]
kernel.kptr_restrict = 2
"net.ipv4.conf.all.rp_filter" = 1
description = """
multi-line
"""
after = 1

[apparmor.profiles."usr.sbin.nginx"]
mode = "enforce"

[[ufw.rules]]
port = "22"

[[ufw.rules]]
port = "80"
comment = "a = b"
'''


def test_lines_of_tables_keys_and_array_elements() -> None:
    lines = SourceMap(TEXT)
    assert lines.line_of(("baseline",)) == 2
    assert lines.line_of(("baseline", "extends")) == 4
    assert lines.line_of(("sysctl", "kernel", "kptr_restrict")) == 10
    # Quoted and dotted spellings of a sysctl are the same key once flattened.
    assert lines.line_of(("sysctl", "kernel.kptr_restrict")) == 10
    assert lines.line_of(("sysctl", "net.ipv4.conf.all.rp_filter")) == 11
    assert lines.line_of(("sysctl", "after")) == 15  # the multi-line string did not confuse it
    assert lines.line_of(("apparmor", "profiles", "usr.sbin.nginx", "mode")) == 18
    assert lines.line_of(("ufw", "rules")) == 20
    assert lines.line_of(("ufw", "rules", 0, "port")) == 21
    assert lines.line_of(("ufw", "rules", 1)) == 23
    assert lines.line_of(("ufw", "rules", 1, "comment")) == 25
    assert lines.line_of(("sysctl", "nothing")) is None


def test_format_key_quotes_only_what_needs_it_and_escapes_control_characters() -> None:
    assert format_key(("ufw", "rules", 2, "port")) == "ufw.rules[2].port"
    assert format_key(("sysctl", "kernel.kptr_restrict")) == 'sysctl."kernel.kptr_restrict"'
    assert format_key(("sysctl", "a\nb")) == 'sysctl."a\\nb"'
