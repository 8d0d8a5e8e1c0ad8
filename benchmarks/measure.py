"""Measuring a benchmark section in its own process: wall and CPU seconds, peak RSS and anon memory."""

from __future__ import annotations

import multiprocessing
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

SAMPLE_SECONDS = 0.01
Result = TypeVar("Result")


def _status_mib(field_name: str) -> float:
    """One memory field of /proc/self/status (VmRSS, RssAnon, ...) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    raise KeyError(field_name)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measurement:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    peak_anon_mib: float = 0.0


class Section:
    """Measures the code inside `with Section() as measured:` into the Measurement `measured`."""

    def __init__(self) -> None:
        self.measured = Measurement()
        self._cpu = self._started = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.measured.peak_anon_mib = max(self.measured.peak_anon_mib, _status_mib("RssAnon"))
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> Measurement:
        self.measured.rss_before_mib = _status_mib("VmRSS")
        self._sampler.start()
        self._cpu = _cpu_seconds()
        self._started = time.perf_counter()
        return self.measured

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.measured.seconds = time.perf_counter() - self._started
        self.measured.cpu_seconds = _cpu_seconds() - self._cpu
        self._stop.set()
        self._sampler.join()
        self.measured.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux




def in_fresh_process(function: Callable[..., Result], *args: object) -> Result:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()