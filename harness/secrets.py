"""Secret environment values: which ones are secret, and keeping them off disk.

A container variable is secret when its key looks like a credential
(``is_secret_key``) or when the inventory reads it from the controller's
environment (``{from_env: NAME}``). A secret value never appears in an argv,
the dry run, plan.txt, results.json or a log the harness writes: the docker
backend passes it through an env file (``docker run --env-file``) that it writes
with mode 0600 in the node's run folder just before the container starts and
removes right after; the copies docker itself keeps (``docker inspect``'s
Config.Env) are masked before container.json is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import NoReturn

REDACTED = "***"
# What `docker run --env-file` (and a shell) accepts as a variable name.
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD")
# Characters an env file line cannot hold (it would end the line or the string).
_LINE_BREAKERS = ("\n", "\r", "\0")
# A JSON string literal, escapes included.
_JSON_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def is_secret_key(key: str) -> bool:
    """Case-insensitive: ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*`` or ``*_KEY``."""
    upper = key.upper()
    return any(word in upper for word in _SECRET_WORDS) or upper.endswith("_KEY")


def redact(text: str, secret_values: Iterable[str]) -> str:
    """`text` with every occurrence of each (non-empty) secret value replaced by ***;
    longer values first, so a value holding another is masked whole."""
    for value in sorted({v for v in secret_values if v}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def redact_container_json(text: str, secret_keys: Iterable[str]) -> str:
    """`docker inspect` output with the value of every ``"KEY=value"`` string whose KEY
    is one of `secret_keys` or looks like a credential replaced by ***: Config.Env
    and any other copy of it (older engines repeat it under ContainerConfig).
    Works on the text, so the rest stays byte for byte, and on output that is not
    valid JSON (a login shell's lines around it) too."""
    keys = set(secret_keys)

    def mask(match: re.Match[str]) -> str:
        key, sep, _ = match.group(1).partition("=")
        if sep and ENV_KEY_RE.match(key) and (key in keys or is_secret_key(key)):
            return f'"{key}={REDACTED}"'
        return match.group(0)

    return _JSON_STRING_RE.sub(mask, text)


def line_breaker(value: str) -> str | None:
    """The name of the first character in `value` that an env file line cannot hold, or None."""
    for char, name in zip(_LINE_BREAKERS, ("a newline", "a carriage return", "a NUL byte")):
        if char in value:
            return name
    return None


class SecretEnv(Mapping[str, str]):
    """Secret variables for one container: key -> value, in memory only.

    Reads like a read-only dict (``items()``, ``[key]``, ``len``), but its repr
    and str show the keys with *** and where each value came from, it refuses to
    be pickled, and json.dumps cannot serialise it (with ``default=str`` it
    writes the masked text). `sources` maps a key to the controller variable its
    value was read from (``from_env``); inline values have none.
    """

    __slots__ = ("_values", "_sources")

    def __init__(self, values: Mapping[str, str] | None = None, sources: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        self._sources = {k: v for k, v in (sources or {}).items() if k in self._values}

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def source(self, key: str) -> str | None:
        """The controller variable the value was read from, or None for an inline value."""
        return self._sources.get(key)

    def describe(self) -> str:
        """``API_TOKEN=*** (from $CI_TOKEN), DB_PASSWORD=***``: sorted, no value."""
        return ", ".join(
            f"{key}={REDACTED}" + (f" (from ${self._sources[key]})" if key in self._sources else "")
            for key in sorted(self._values))

    def __repr__(self) -> str:
        return f"SecretEnv({self.describe()})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretEnv holds secret values: it is not pickled")

    def __copy__(self) -> "SecretEnv":
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> "SecretEnv":
        return self  # immutable; and dataclasses.asdict must not copy the values out


def env_file_text(env: Mapping[str, str]) -> str:
    """`docker run --env-file` content: one ``KEY=value`` line per variable, sorted.
    Docker takes the rest of the line literally (no quotes, no escapes), so a key
    must be a plain name and a value must not hold a line break (ValueError)."""
    lines = []
    for key in sorted(env):
        value = env[key]
        if not ENV_KEY_RE.match(key):
            raise ValueError(f"{key!r} is not a variable name an env file can hold")
        broken = line_breaker(value)
        if broken:
            raise ValueError(f"the value of {key} holds {broken}: an env file line cannot")
        lines.append(f"{key}={value}\n")
    return "".join(lines)


def write_private_file_argv(path: str) -> list[str]:
    """argv that writes its stdin to `path` on a host, readable by the owner only
    (0600 from its creation on: no moment where another user could read it)."""
    return ["sh", "-c", 'umask 077 && rm -f -- "$1" && cat > "$1"', "sh", path]


def remove_file_argv(path: str) -> list[str]:
    return ["rm", "-f", "--", path]
