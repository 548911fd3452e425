"""Counters keyed by process that stay bounded as workers come and go.

gunicorn recycles workers (``max_requests``), so a long-lived master sees
an unbounded number of pids. Per-process counts (drops, losses, records cut
short) keep at most ``MAX_KEYS`` keys: past that, the oldest half is added
up under a folded key (pid 0), so every total stays exact.
"""

from __future__ import annotations

from typing import Callable, MutableMapping, TypeVar

__all__ = ["MAX_KEYS", "add", "by_pid", "by_level_and_pid", "fold"]

#: The most keys a per-process counter keeps before folding the oldest.
MAX_KEYS = 1024

K = TypeVar("K")


def by_pid(_pid: int) -> int:
    """Where a folded pid's count goes: pid 0, "older processes"."""
    return 0


def by_level_and_pid(key: tuple) -> tuple:  # type: ignore[type-arg]
    """A (level, pid) count folds into (level, 0)."""
    return (key[0], 0)


def fold(counts: MutableMapping[K, int], folded: Callable[[K], K]) -> None:
    """Past ``MAX_KEYS`` keys, add the oldest half up under their folded keys."""
    if len(counts) <= MAX_KEYS:
        return
    for old in list(counts)[: MAX_KEYS // 2]:
        target = folded(old)
        if target != old:
            counts[target] = counts.get(target, 0) + counts.pop(old)


def add(counts: MutableMapping[K, int], key: K, count: int, folded: Callable[[K], K]) -> None:
    """``counts[key] += count``, folding first when a new key would pass the bound."""
    if key not in counts and len(counts) >= MAX_KEYS:
        fold(counts, folded)
    counts[key] = counts.get(key, 0) + count
