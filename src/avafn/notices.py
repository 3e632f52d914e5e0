"""Warnings of one command, grouped by kind: one line per kind with a count, never one per item.

::

    notices = Notices()
    notices.warn("sound descriptions dropped", "talk.srt:12")
    notices.warn("sound descriptions dropped", "talk.srt:40")
    notices.lines()  # ['sound descriptions dropped: 2 (talk.srt:12, talk.srt:40)']

A kind keeps its first few places (``examples``) so that the line says where to look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class _Group:
    count: int = 0
    where: list[str] = field(default_factory=list)


class Notices:
    """Warnings grouped by kind (insertion order), each with a count and a few places."""

    def __init__(self, examples: int = 3) -> None:
        self.examples = examples
        self._groups: dict[str, _Group] = {}

    def warn(self, kind: str, where: str = "", count: int = 1) -> None:
        """Count ``count`` occurrences of ``kind`` (``where``: a place to name, e.g. file:line)."""
        if count <= 0:
            return
        g = self._groups.setdefault(kind, _Group())
        g.count += count
        if where and len(g.where) < self.examples:
            g.where.append(where)

    def extend(self, other: Notices) -> None:
        for kind, g in other._groups.items():
            mine = self._groups.setdefault(kind, _Group())
            mine.count += g.count
            mine.where += g.where[: max(0, self.examples - len(mine.where))]

    def count(self, kind: str) -> int:
        g = self._groups.get(kind)
        return g.count if g else 0

    def __len__(self) -> int:
        return len(self._groups)

    def __bool__(self) -> bool:
        return bool(self._groups)

    def kinds(self) -> list[str]:
        return list(self._groups)

    def lines(self) -> list[str]:
        """One line per kind: ``KIND: COUNT (place, place, ...)``."""
        out = []
        for kind, g in self._groups.items():
            more = ", ..." if g.count > len(g.where) and g.where else ""
            where = f" ({', '.join(g.where)}{more})" if g.where else ""
            out.append(f"{kind}: {g.count}{where}")
        return out

    def to_dict(self) -> list[dict]:
        return [{"warning": k, "count": g.count, "where": list(g.where)}
                for k, g in self._groups.items()]

    @classmethod
    def from_dicts(cls, items: Iterable[dict]) -> Notices:
        n = cls()
        for it in items:
            n._groups[str(it["warning"])] = _Group(int(it["count"]), list(it.get("where", [])))
        return n
