"""The sampler's daily byte budget, persisted so a restart (or a crash loop) cannot spend it twice.

Days are UTC days of the agent's wall clock. The day's spend is written (a small JSON file, replaced
atomically) each time the sampler ships a batch, about once a telemetry window; a file that cannot be
read counts as nothing spent, a file that cannot be written is logged and the budget is kept in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BUDGET_FILE = "sample_budget.json"  # in the agent's state_dir
DAY_MS = 86_400_000


def utc_day(now_ms: int) -> str:
    return dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date().isoformat()


def ms_to_midnight(now_ms: int) -> int:
    return DAY_MS - now_ms % DAY_MS


class DailyBudget:
    def __init__(self, limit_bytes: int, path: Path | None = None) -> None:
        if limit_bytes < 0:
            raise ValueError(f"a daily budget cannot be negative, got {limit_bytes}")
        self.limit = limit_bytes
        self.path = path
        self.day, self.spent = self._load()

    def _load(self) -> tuple[str, int]:
        if self.path is None or not self.path.exists():
            return "", 0
        try:
            saved = json.loads(self.path.read_text())
            return str(saved["day"]), max(int(saved["spent_bytes"]), 0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sample budget file %s unreadable (%s): counting today's spend from 0", self.path, exc)
            return "", 0

    def _roll(self, now_ms: int) -> None:
        today = utc_day(now_ms)
        if today != self.day:
            self.day, self.spent = today, 0

    def remaining(self, now_ms: int) -> int:
        self._roll(now_ms)
        return max(self.limit - self.spent, 0)

    def spend(self, now_ms: int, nbytes: int) -> None:
        self._roll(now_ms)
        self.spent += nbytes
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one writer per state dir (its agent): a fixed temporary name, not tempfile (~0.8 MB of imports)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"day": self.day, "spent_bytes": self.spent}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not persist the sample budget to %s: %s", self.path, exc)
