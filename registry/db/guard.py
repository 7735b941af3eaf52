"""Bounds on a user's filter, checked before it reaches the server.

A regular expression with nested quantifiers, such as `(A+)+B`, backtracks exponentially on a near-match; the
embedded server evaluates a match without interruption, so one such query on a 30-character string holds every
client for a minute and more, whatever its `maxTimeMS` (measured: docs/security.md). Such patterns, and quantified
groups with alternatives (`(A|AA)+`), are refused; so is a filter nested deeper than MongoDB accepts.
`maxTimeMS` (`Registry.find(max_time_ms=...)`) bounds the rest: a long scan is stopped between documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bson.regex import Regex

from registry.errors import RegistryError

MAX_DEPTH = 100  # MongoDB refuses deeper documents too
MAX_PATTERN = 1000  # characters
REGEX_OPERATORS = ("$regex", "regex")  # a query operator; the `regex` argument of $regexMatch/Find/FindAll


def check_filter(value: Any) -> None:
    """Refuse, in one line, a filter that could hold the server: too deep, or a regex that backtracks."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RegistryError(f"the filter is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, Mapping):
            for key, sub in item.items():
                if key in REGEX_OPERATORS and isinstance(sub, str):
                    check_pattern(sub)
                stack.append((sub, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, Regex | re.Pattern):
            check_pattern(item.pattern if isinstance(item.pattern, str) else item.pattern.decode(errors="replace"))


def check_pattern(pattern: str) -> None:
    if len(pattern) > MAX_PATTERN:
        raise RegistryError(f"regular expression longer than {MAX_PATTERN} characters refused")
    if problem := backtracking(pattern):
        raise RegistryError(f"regular expression {pattern[:80]!r} refused: {problem} can take exponential time; "
                            "write it without them")


_QUANTIFIER = re.compile(r"(?:[*+?]|\{(\d*)(,?)(\d*)\})[?+]?")  # with a lazy or possessive suffix


def _repeats(quantifier: re.Match[str]) -> bool:
    """`*`, `+`, `{2}`, `{1,}`, `{0,5}`: more than one repetition; `?`, `{1}`, `{0,1}` are not."""
    token = quantifier.group()
    if token[0] in "*+":
        return True
    if token[0] == "?":
        return False
    low, comma, high = quantifier.groups()
    return (int(high) if high else (2 if comma else int(low or 0))) > 1


def backtracking(pattern: str) -> str | None:
    """What makes `pattern` backtrack exponentially (a repeated group that holds a repeat or an alternative), or
    None. A scan of the pattern's syntax that skips escapes and character classes."""
    groups = [{"repeat": False, "alternative": False}]  # [0]: the pattern itself
    closed: dict[str, bool] | None = None  # the group that just closed, until we see whether it is repeated
    i = 0
    while i < len(pattern):
        if quantifier := _QUANTIFIER.match(pattern, i):
            if _repeats(quantifier):
                if closed and closed["repeat"]:
                    return "a repeat inside a repeated group (nested quantifiers)"
                if closed and closed["alternative"]:
                    return "alternatives inside a repeated group"
                groups[-1]["repeat"] = True
            closed = None
            i = quantifier.end()
            continue
        closed = None
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i += 2 if pattern.startswith("[^", i) else 1
            i += 1 if pattern.startswith("]", i) else 0  # a leading ] is a literal
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif char == "(":
            groups.append({"repeat": False, "alternative": False})
            i += 2 if pattern.startswith("(?", i) else 0  # (?:, (?=, (?P<...: the ? is no quantifier
        elif char == ")" and len(groups) > 1:
            closed = groups.pop()
            groups[-1]["repeat"] |= closed["repeat"]
        elif char == "|":
            groups[-1]["alternative"] = True
        i += 1
    return None
