"""What happens to a bad input record: a UserError that names it, or (skip_bad_records) a count and a warning."""

from __future__ import annotations

import logging

from ..errors import UserError

log = logging.getLogger(__name__)
_SHOWN = 5  # line numbers listed in the summary warning


class BadRecords:
    """Collects bad records of one file. Without `skip`, the first one raises at once."""

    def __init__(self, path: str, skip: bool, unit: str = "line") -> None:
        self.path, self.skip, self.unit = path, skip, unit
        self.where: list[int | str] = []

    def add(self, where: int | str, reason: str) -> None:
        """Record that `where` (a line number, or a file name for text data) is unusable because of `reason`."""
        if not self.skip:
            raise UserError(f"{self.path}: {self.unit} {where}: {reason}. Fix or remove it, or pass "
                            f"--skip_bad_records to skip bad records (they are counted and reported).")
        self.where.append(where)

    def report(self) -> None:
        """Log one warning line with the count and the first few locations, if anything was skipped."""
        if self.where:
            first = ", ".join(str(w) for w in self.where[:_SHOWN]) + (", ..." if len(self.where) > _SHOWN else "")
            log.warning("%s: skipped %d bad record(s) (%s %s)", self.path, len(self.where), self.unit + "s", first)
