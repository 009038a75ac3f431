"""Layer-name patterns, as recipes write them: an exact module name, or ``re:`` and a regular expression.

A regular expression must match the whole name (``re:.*\\.value`` matches
``encoder.layer.0.attention.self.value``, ``value`` alone matches only the
module called ``value``).
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str] | None:
    """The compiled regular expression of a ``re:`` pattern (None for an exact name); re.error when invalid."""
    return re.compile(pattern[3:]) if pattern.startswith("re:") else None


def matches(pattern: str, name: str) -> bool:
    """An exact name, or ``re:REGEX`` matching the whole name."""
    regex = compiled(pattern)
    return regex.fullmatch(name) is not None if regex is not None else pattern == name
