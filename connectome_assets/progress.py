"""Progress of a long step, in words a person reads in the run log.

    synapses: 42 batches, 44.0 M of 151.9 M rows (29%), 5.10 M rows/s, ETA 21 s

A step calls `advance` after each unit of work (a record batch, a shard); a line goes to
`report` at most every `every_seconds`, and `finish` always reports the last one. The ETA comes
from the amount when its total is known (rows, voxels), else from the steps (shards). Library
code takes a `report` callable, so it stays free of Dagster: the assets pass `context.log.info`,
the CLI `print`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float) -> str:
    """3 significant figures with an SI prefix: 44012345 -> '44.0 M', 812 -> '812'."""
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{_three_figures(value / scale)} {prefix}"
    return str(int(value)) if value == int(value) else _three_figures(value)


def _three_figures(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def duration(seconds: float) -> str:
    """'21 s', '4 min 05 s', '2 h 03 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts `amount` (rows, voxels) and `steps` (batches, shards) of one named step."""

    def __init__(
        self,
        what: str,
        report: Callable[[str], Any],
        *,
        unit: str = "rows",
        total: int | None = None,
        step: str = "batches",
        steps_total: int | None = None,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.report, self.unit, self.total, self.step, self.steps_total = what, report, unit, total, step, steps_total
        self.every_seconds, self.clock = every_seconds, clock
        self.amount = self.steps = 0
        self.started = self.last_report = clock()

    def advance(self, amount: int = 0, steps: int = 1) -> None:
        self.amount += amount
        self.steps += steps
        now = self.clock()
        if now - self.last_report >= self.every_seconds:
            self.last_report = now
            self.report(self.line(now))

    def finish(self) -> dict[str, Any]:
        """Reports the final line; returns the figures for the materialization's metadata."""
        now = self.clock()
        self.report(self.line(now, done=True))
        seconds = now - self.started
        return {self.unit: self.amount, self.step: self.steps, "seconds": round(seconds, 3), f"{self.unit}_per_second": round(self.amount / seconds, 1) if seconds > 0 else None}

    def eta_seconds(self, now: float) -> float | None:
        elapsed = now - self.started
        if self.total and self.amount:
            done, total = self.amount, self.total
        elif self.steps_total and self.steps:
            done, total = self.steps, self.steps_total
        else:
            return None
        return elapsed * (total - done) / done if done < total else 0.0

    def line(self, now: float | None = None, done: bool = False) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.started
        steps = f"{self.steps}/{self.steps_total} {self.step}" if self.steps_total is not None else f"{self.steps} {self.step}"
        amount = f"{si(self.amount)} of {si(self.total)} {self.unit} ({100 * self.amount / self.total:.0f}%)" if self.total else f"{si(self.amount)} {self.unit}"
        rate = f"{si(self.amount / elapsed)} {self.unit}/s" if elapsed > 0 else f"- {self.unit}/s"
        if done:
            return f"{self.what}: done, {steps}, {si(self.amount)} {self.unit} in {duration(elapsed)}, {rate}"
        eta = self.eta_seconds(now)
        return f"{self.what}: {steps}, {amount}, {rate}" + (f", ETA {duration(eta)}" if eta is not None else "")


def discard(line: str) -> None:
    """The report of a library call nobody reads (tests, benchmarks): the lines are dropped."""
