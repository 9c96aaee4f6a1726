"""The reconciliation of one load: every row read is loaded, quarantined or deduplicated.

Per table, ``read = loaded + quarantined + deduplicated``. Per reason, the rows of
every ``quarantined`` reason add up to the table's ``quarantined`` count, and the
``deduplicated`` reason to its ``deduplicated`` count. ``flagged`` reasons count
loaded rows that look suspicious (overlapping subscriptions, unknown accounts) and
stay in the clean table; they are not part of the balance.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Action = Literal["quarantined", "deduplicated", "flagged"]


@dataclass(frozen=True)
class TableCount:
    """Row counts of one input table."""

    table: str
    source: str
    read: int
    loaded: int
    quarantined: int
    deduplicated: int

    @property
    def balanced(self) -> bool:
        """True when ``read == loaded + quarantined + deduplicated``."""
        return self.read == self.loaded + self.quarantined + self.deduplicated


@dataclass(frozen=True)
class ReasonCount:
    """Rows of one table that share a reason, and what was done with them."""

    table: str
    reason: str
    rows: int
    action: Action


@dataclass(frozen=True)
class Reconciliation:
    """What happened to every row of every source in one load.

    Attributes
    ----------
    tables
        One :class:`TableCount` per configured table.
    reasons
        One :class:`ReasonCount` per (table, reason), in check priority order.
    created_at
        ISO timestamp (UTC) of the load.
    sources
        A fingerprint of the config's ``sources`` the load read (empty when unknown): later
        stages re-ingest when the config's sources no longer match it.
    """

    tables: list[TableCount]
    reasons: list[ReasonCount] = field(default_factory=list)
    created_at: str = ""
    sources: str = ""

    @property
    def balanced(self) -> bool:
        """True when every table balances and its reasons add up to its counts."""
        if not all(t.balanced for t in self.tables):
            return False
        for t in self.tables:
            q = sum(r.rows for r in self.reasons if r.table == t.table and r.action == "quarantined")
            d = sum(r.rows for r in self.reasons if r.table == t.table and r.action == "deduplicated")
            if q != t.quarantined or d != t.deduplicated:
                return False
        return True

    @property
    def quarantined_total(self) -> int:
        """Rows quarantined across all tables."""
        return sum(t.quarantined for t in self.tables)

    def table(self, name: str) -> TableCount:
        """The counts of table ``name``.

        Raises
        ------
        KeyError
            If the table was not loaded.
        """
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(f"No table {name!r} in this reconciliation; loaded: {[t.table for t in self.tables]}.")

    def rows(self, table: str, reason: str) -> int:
        """Rows of ``table`` with exactly this ``reason`` (0 when none)."""
        return sum(r.rows for r in self.reasons if r.table == table and r.reason == reason)

    def by_reason(self, table: str) -> dict[str, int]:
        """``{reason: rows}`` of one table."""
        return {r.reason: r.rows for r in self.reasons if r.table == table}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping, including the ``balanced`` flags."""
        return {
            "created_at": self.created_at,
            "balanced": self.balanced,
            "quarantined_total": self.quarantined_total,
            "tables": [{**asdict(t), "balanced": t.balanced} for t in self.tables],
            "reasons": [asdict(r) for r in self.reasons],
            "sources": self.sources,
        }

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` atomically (temp file, then rename) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> Reconciliation:
        """Read a reconciliation written by :meth:`write_json`."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        tables = [
            TableCount(**{k: v for k, v in t.items() if k != "balanced"}) for t in raw.get("tables", [])
        ]
        reasons = [ReasonCount(**r) for r in raw.get("reasons", [])]
        return cls(tables=tables, reasons=reasons, created_at=raw.get("created_at", ""),
                   sources=raw.get("sources", ""))

    def log(self) -> None:
        """Log one line per table and per reason."""
        for t in self.tables:
            level = logging.INFO if t.balanced else logging.ERROR
            logger.log(
                level,
                "%s: read %d rows from %s -> loaded %d, quarantined %d, deduplicated %d%s",
                t.table,
                t.read,
                t.source,
                t.loaded,
                t.quarantined,
                t.deduplicated,
                "" if t.balanced else " (DOES NOT BALANCE)",
            )
        for r in self.reasons:
            logger.info("%s: %d rows %s: %s", r.table, r.rows, r.action, r.reason)
