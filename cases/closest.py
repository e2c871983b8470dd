"""The closest known name to a mistyped one ("did you mean `bs`?"), for every
unknown-key error of the case configs and of the controller's YAML files.

Stdlib only, Python 3.8 syntax: the training side imports it too.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Optional

# difflib's ratio: a one-letter slip in a two-letter key (bz for bs) scores 0.5.
CUTOFF = 0.5


def closest(word: str, known: Iterable[str]) -> Optional[str]:
    """The known name most like `word` (case ignored), or None when none is close."""
    by_lower = {name.lower(): name for name in known}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=CUTOFF)
    return by_lower[found[0]] if found else None


def unknown_key(word: str, known: Iterable[str], noun: str = "key") -> str:
    """`unknown key 'bz'; did you mean 'bs'?`, or, when nothing is close, the list of
    known names (`unknown key 'zzz'; known keys: bs, lr, ...`)."""
    names = list(known)
    match = closest(word, names)
    if match is not None:
        return f"unknown {noun} {word!r}; did you mean {match!r}?"
    return f"unknown {noun} {word!r}; known {noun}s: {', '.join(names)}"
