"""Progress of a stage's long loops: a tqdm bar on a terminal, and elsewhere (Dagster's run logs, `dvc repro`
piped to a file, CI) a log line at most every LOG_SECONDS, so a stage that works for minutes is never silent."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_SECONDS = 10.0


class Progress:
    """Counts work done out of `total` (in `unit`s); shows it as a bar on a terminal, else logs it."""

    def __init__(self, log: logging.Logger, desc: str, total: float, unit: str = "") -> None:
        self.log, self.desc, self.total, self.unit, self.every = log, desc, total, unit, LOG_SECONDS
        self.bar = tqdm(total=total, unit=unit or "it", desc=desc, file=sys.stderr, disable=None, mininterval=1.0)
        self.done = 0.0
        self._started = self._logged = time.monotonic()
        self._said = False

    def update(self, n: float = 1) -> None:
        self.done += n
        self.bar.update(n)
        if self.bar.disable and time.monotonic() - self._logged >= self.every:
            self._say()

    def close(self) -> None:
        """The last count too, when the loop lasted long enough to be logged at all."""
        if self.bar.disable and (self._said or time.monotonic() - self._started >= self.every):
            self._say()
        self.bar.close()

    def _say(self) -> None:
        self._logged, self._said = time.monotonic(), True
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        self.log.info("%s: %s of %s %s%s, %.0f s", self.desc, _amount(self.done), _amount(self.total), self.unit,
                      share, self._logged - self._started)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tracked(items: Iterable[T], progress: Progress, size: Callable[[T], float] = lambda _: 1) -> Iterator[T]:
    """The items, each counted (by `size`) once it has been handed on; the progress closed after the last."""
    with progress:
        for item in items:
            yield item
            progress.update(size(item))


def _amount(x: float) -> str:
    return f"{x:,.0f}" if x < 1e6 else f"{x / 1e6:,.1f} M"
