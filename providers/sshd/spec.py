"""The `[sshd]` table: OpenSSH server keywords, each checked strictly for its kind when the baseline loads.

Keys are sshd_config(5) keywords, case-insensitive as sshd reads them, held in their canonical
case. Each keyword has one kind, and the kind says what TOML value it takes, how the value is
written into the drop-in, and how `sshd -T` prints it back (the form compared):

- yes/no: a TOML boolean; choices: one of the keyword's words (booleans too, for yes/no words);
- numbers; time spans: seconds as a number, or sshd's "1m30s" form; names: one word;
- lists: a TOML array (or one string) of words, space-joined in the file; algorithm lists are
  comma-joined, and checked at plan time against what the host's OpenSSH supports (`ssh -Q`).

`Match` blocks are out of scope: a `Match` key is an error saying so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from pydantic import Field, PlainValidator, create_model, model_validator

from converge.provider import StrictModel

# A value word as sshd reads it: no whitespace, quotes, '#' or control characters.
_WORD = re.compile(r"[A-Za-z0-9_.,:@%+*?!/=\[\]~-]{1,1024}")
_NAME = re.compile(r"[A-Za-z0-9_.*?!@%\[\]/:-]{1,256}")  # user/group patterns, user@host
_ALGORITHM = re.compile(r"[a-z0-9][a-z0-9@._-]{0,127}")
_TIME = re.compile(r"(?:[0-9]+[sSmMhHdDwW]?)+")
_TIME_PART = re.compile(r"([0-9]+)([sSmMhHdDwW]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_STARTUPS = re.compile(r"[0-9]{1,6}(?::[0-9]{1,3}:[0-9]{1,6})?")
_AUTH_METHOD = re.compile(
    r"(?:publickey|password|keyboard-interactive(?::[a-z]+)?|hostbased|gssapi-with-mic)"
    r"(?:,(?:publickey|password|keyboard-interactive(?::[a-z]+)?|hostbased|gssapi-with-mic))*"
)

# The algorithm kinds, by the `ssh -Q` query that lists what the host supports.
ALGORITHM_QUERIES = ("cipher", "mac", "kex", "key-sig")

Value = bool | int | str | list[str] | list[int]


def seconds(text: str) -> int:
    """sshd's time format (sshd_config(5) TIME FORMATS): "90", "1m30s", "1h"."""
    return sum(int(number) * _UNITS[unit.lower()] for number, unit in _TIME_PART.findall(text))


@dataclass(frozen=True)
class Kind:
    """How one kind of keyword is validated (TOML -> value), written (value -> file text) and read
    back from `sshd -T` (its lines' values -> value)."""

    name: str
    check: Callable[[Any], Value]
    write: Callable[[Value], list[str]]
    effective: Callable[[list[str]], Value]
    # For algorithm lists: the `ssh -Q` query naming what the host supports.
    query: str | None = None


def _bad(what: str, value: Any) -> ValueError:
    shown = f": {value!r}" if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return ValueError(f"expected {what}{shown}")


def _yes_no(value: Any) -> Value:
    if not isinstance(value, bool):
        raise _bad("true or false (written yes/no)", value)
    return value


def _number(low: int, high: int) -> Callable[[Any], Value]:
    def check(value: Any) -> Value:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(f"a whole number from {low} to {high}", value)
        return value

    return check


def _time(value: Any) -> Value:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31 - 1:
        return value
    if isinstance(value, str) and _TIME.fullmatch(value) and seconds(value) <= 2**31 - 1:
        return seconds(value)
    raise _bad('a time span: seconds (30) or sshd\'s form ("30s", "1m30s", "2h")', value)


def _choice(*words: str) -> Callable[[Any], Value]:
    canonical = {word.lower(): word for word in words}

    def check(value: Any) -> Value:
        if isinstance(value, bool) and "yes" in canonical and "no" in canonical:
            return "yes" if value else "no"
        if isinstance(value, str) and value.lower() in canonical:
            return canonical[value.lower()]
        raise _bad(f"one of: {', '.join(words)}" + (" (or true/false)" if "yes" in canonical else ""), value)

    return check


def _single(pattern: re.Pattern[str], what: str) -> Callable[[Any], Value]:
    def check(value: Any) -> Value:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _bad(f"{what} (one word: no spaces, quotes or newlines)", value)
        return value

    return check


def _words(pattern: re.Pattern[str], what: str) -> Callable[[Any], Value]:
    def check(value: Any) -> Value:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, str) and pattern.fullmatch(item) for item in items):
            raise _bad(f"{what}: an array of words without spaces, quotes or newlines", value if isinstance(value, str) else None)
        if len(set(items)) != len(items):
            raise ValueError("an item is listed twice")
        return list(items)

    return check


def _ports(value: Any) -> Value:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in items):
        raise _bad("a port (22) or an array of ports, each 1-65535", None)
    return sorted(set(items))


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value)


def _one_line(value: Value) -> list[str]:
    return [_text(value)]


def _comma_line(value: Value) -> list[str]:
    assert isinstance(value, list)
    return [",".join(str(item) for item in value)]


def _per_line(value: Value) -> list[str]:
    assert isinstance(value, list)
    return [str(item) for item in value]


def _first(lines: list[str]) -> str:
    return lines[0] if lines else ""


YES_NO = Kind("yes/no", _yes_no, _one_line, lambda lines: _first(lines) == "yes")
TIME = Kind("time", _time, _one_line, lambda lines: seconds(_first(lines) or "0"))
PORTS = Kind("ports", _ports, _per_line, lambda lines: sorted({int(line) for line in lines}))


def number(low: int = 0, high: int = 2**31 - 1) -> Kind:
    return Kind("number", _number(low, high), _one_line, lambda lines: int(_first(lines) or "0"))


def choice(*words: str, aliases: dict[str, str] | None = None) -> Kind:
    canonical = {word.lower(): word for word in words} | (aliases or {})
    return Kind("choice", _choice(*words), _one_line, lambda lines: canonical.get(_first(lines).lower(), _first(lines)))


def single(pattern: re.Pattern[str], what: str) -> Kind:
    return Kind("name", _single(pattern, what), _one_line, _first)


def names(pattern: re.Pattern[str] = _NAME, what: str = "user or group patterns") -> Kind:
    # `sshd -T` prints each item of these lists on its own line.
    return Kind("names", _words(pattern, what), _one_line, lambda lines: [item for line in lines for item in line.split()])


def algorithms(query: str) -> Kind:
    return Kind("algorithms", _words(_ALGORITHM, "algorithm names"), _comma_line,
                lambda lines: _first(lines).split(",") if _first(lines) else [], query)


AUTHENTICATION_METHODS = Kind(
    "methods", _words(_AUTH_METHOD, 'comma-joined method lists ("publickey", "publickey,password")'), _one_line,
    lambda lines: [] if _first(lines) in ("", "any") else _first(lines).split(),
)

YES_NO_WORDS = ("yes", "no")
LOG_LEVELS = ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")
FACILITIES = ("DAEMON", "USER", "AUTH", "AUTHPRIV", "LOCAL0", "LOCAL1", "LOCAL2", "LOCAL3", "LOCAL4", "LOCAL5", "LOCAL6",
              "LOCAL7")
_PATH = re.compile(r"/[A-Za-z0-9_.@%+=:,/-]{0,1023}|none")

# keyword -> (kind, description). The descriptions become the README key table and the schema.
KEYWORDS: dict[str, tuple[Kind, str]] = {
    "PermitRootLogin": (choice("yes", "prohibit-password", "forced-commands-only", "no",
                               aliases={"without-password": "prohibit-password"}),
                        "Whether root may log in: yes, prohibit-password (keys only), forced-commands-only or no."),
    "PasswordAuthentication": (YES_NO, "Whether password authentication is allowed."),
    "KbdInteractiveAuthentication": (YES_NO, "Whether keyboard-interactive authentication (PAM prompts) is allowed."),
    "PubkeyAuthentication": (YES_NO, "Whether public key authentication is allowed."),
    "PermitEmptyPasswords": (YES_NO, "Whether accounts with an empty password may log in with it."),
    "HostbasedAuthentication": (YES_NO, "Whether rhosts/shosts host-based authentication is allowed."),
    "IgnoreRhosts": (YES_NO, "Whether .rhosts and .shosts files are ignored."),
    "KerberosAuthentication": (YES_NO, "Whether passwords are checked through Kerberos."),
    "GSSAPIAuthentication": (YES_NO, "Whether GSSAPI user authentication is allowed."),
    "UsePAM": (YES_NO, "Whether PAM is used for authentication, accounts and sessions."),
    "StrictModes": (YES_NO, "Whether sshd checks the modes and owners of the user's files before login."),
    "X11Forwarding": (YES_NO, "Whether X11 forwarding is permitted."),
    "X11UseLocalhost": (YES_NO, "Whether the X11 forwarding server binds to the loopback address."),
    "AllowAgentForwarding": (YES_NO, "Whether ssh-agent forwarding is permitted."),
    "AllowTcpForwarding": (choice("yes", "no", "local", "remote", "all"),
                           "Which TCP forwarding is permitted: yes (all), local, remote or no."),
    "AllowStreamLocalForwarding": (choice("yes", "no", "local", "remote", "all"),
                                   "Which Unix-domain socket forwarding is permitted."),
    "DisableForwarding": (YES_NO, "Whether every kind of forwarding is disabled, overriding the other options."),
    "GatewayPorts": (choice("yes", "no", "clientspecified"),
                     "Whether remote hosts may connect to ports forwarded for the client."),
    "PermitTunnel": (choice("yes", "no", "point-to-point", "ethernet"), "Whether tun(4) device forwarding is allowed."),
    "PermitTTY": (YES_NO, "Whether a pty may be allocated."),
    "PermitUserEnvironment": (YES_NO, "Whether ~/.ssh/environment and environment= options in authorized_keys are read."),
    "PermitUserRC": (YES_NO, "Whether ~/.ssh/rc is run."),
    "PrintMotd": (YES_NO, "Whether sshd prints /etc/motd at login."),
    "PrintLastLog": (YES_NO, "Whether sshd prints the time of the last login."),
    "TCPKeepAlive": (YES_NO, "Whether TCP keepalive messages are sent."),
    "UseDNS": (YES_NO, "Whether sshd looks up the client's host name and checks it resolves back."),
    "Compression": (choice("yes", "delayed", "no", aliases={"delayed": "yes"}),
                    "Whether compression is allowed (delayed is the same as yes)."),
    "MaxAuthTries": (number(1, 1000), "Authentication attempts permitted per connection."),
    "MaxSessions": (number(0, 10000), "Open shell, login or subsystem sessions permitted per connection."),
    "MaxStartups": (Kind("name", _single(_MAX_STARTUPS, 'a number or "start:rate:full"'), _one_line, _first),
                    'Unauthenticated connections allowed at once: "10" or "start:rate:full" such as "10:30:100".'),
    "ClientAliveInterval": (TIME, "Seconds of client silence after which sshd asks the client for a sign of life (0: never)."),
    "ClientAliveCountMax": (number(0, 1000), "Unanswered client-alive messages before sshd disconnects."),
    "LoginGraceTime": (TIME, "Time a client has to authenticate (0: no limit)."),
    "Port": (PORTS, "The port or ports sshd listens on."),
    "LogLevel": (choice(*LOG_LEVELS), "The verbosity of sshd's log."),
    "SyslogFacility": (choice(*FACILITIES), "The syslog facility sshd logs with."),
    "Banner": (single(_PATH, 'an absolute path, or "none"'), 'A file sent before authentication, or "none".'),
    "AllowUsers": (names(), "Only users matching one of these patterns (user or user@host) may log in."),
    "DenyUsers": (names(), "Users matching one of these patterns (user or user@host) may not log in."),
    "AllowGroups": (names(), "Only users in one of these groups may log in."),
    "DenyGroups": (names(), "Users in one of these groups may not log in."),
    "AcceptEnv": (names(_WORD, "environment variable names or patterns"),
                  "Environment variables sent by the client that sshd accepts."),
    "AuthenticationMethods": (AUTHENTICATION_METHODS,
                              'Method lists a user must complete, any one of them ("publickey", "publickey,password").'),
    "Ciphers": (algorithms("cipher"), "Ciphers allowed, in order of preference."),
    "MACs": (algorithms("mac"), "Message authentication codes allowed, in order of preference."),
    "KexAlgorithms": (algorithms("kex"), "Key exchange algorithms allowed, in order of preference."),
    "HostKeyAlgorithms": (algorithms("key-sig"), "Host key signature algorithms sshd offers."),
    "PubkeyAcceptedAlgorithms": (algorithms("key-sig"), "Signature algorithms accepted for public key authentication."),
}
_CANONICAL = {keyword.lower(): keyword for keyword in KEYWORDS}
# Older names sshd still accepts for a keyword.
_CANONICAL["challengeresponseauthentication"] = "KbdInteractiveAuthentication"
_CANONICAL["pubkeyacceptedkeytypes"] = "PubkeyAcceptedAlgorithms"
MATCH = "Match"


def canonical(keyword: str) -> str | None:
    return _CANONICAL.get(keyword.lower())


def _no_match(value: Any) -> Any:
    raise ValueError("Match blocks are out of scope for the sshd provider (first version): set keywords for all "
                     "connections, and keep Match blocks in files of your own")


class _Base(StrictModel):
    @model_validator(mode="before")
    @classmethod
    def _canonical_case(cls, data: Any) -> Any:
        """Keywords in any case, as sshd reads them; unknown ones are left for the unknown-key error."""
        if not isinstance(data, dict):
            return data
        keys: dict[str, Any] = {}
        for key, value in data.items():
            name = MATCH if isinstance(key, str) and key.lower() == "match" else canonical(key) if isinstance(key, str) else None
            target = name or key
            if target in keys:
                raise ValueError(f"{key} is set twice (keywords are case-insensitive)")
            keys[target] = value
        return keys

    def settings(self) -> dict[str, Value]:
        """The keywords set, canonical name -> value, in KEYWORDS order (the drop-in's order)."""
        return {name: value for name, value in self if value is not None and name != MATCH}


def _field(kind: Kind, description: str) -> Any:
    return (Annotated[Value | None, PlainValidator(kind.check)], Field(default=None, description=description))


_FIELDS: dict[str, Any] = {name: _field(kind, description) for name, (kind, description) in KEYWORDS.items()}
_FIELDS[MATCH] = _field(Kind("match", _no_match, _one_line, _first), "Not supported: Match blocks are out of scope.")

SshdSpec = cast("type[_Base]", create_model("SshdSpec", __base__=_Base, __doc__="`[sshd]`: OpenSSH server keywords.",
                                           **_FIELDS))
