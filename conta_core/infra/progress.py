"""Progress of long steps: a tqdm bar on a TTY, else a log line every $CONTA_PROGRESS_SECONDS
seconds (Snakemake and SLURM logs), with rate and ETA; `track` wraps the per-image loops."""

from __future__ import annotations

import logging
import os
import sys
import time


def progress_enabled() -> bool:
    """Progress bars only on a TTY; log files (Snakemake, SLURM) get `Progress` lines instead."""
    return sys.stderr.isatty()


PROGRESS_SECONDS_ENV = "CONTA_PROGRESS_SECONDS"  # seconds between progress log lines off a TTY (default 30)


def _progress_seconds() -> float:
    text = os.environ.get(PROGRESS_SECONDS_ENV, "30")
    try:
        return max(0.0, float(text))
    except ValueError:
        raise ValueError(f"environment variable {PROGRESS_SECONDS_ENV}: expected seconds, got {text!r}") from None


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of a long step: a tqdm bar on a TTY; otherwise a log line at most every
    $CONTA_PROGRESS_SECONDS seconds (default 30) and at the end, e.g.
    `train_seg: 1200/20000 (6%), loss 0.4120, lr 0.00024, 3.1 it/s, ETA 1:40:58`,
    so the tail of a job log shows a running job."""

    def __init__(self, desc: str, total: int, initial: int = 0, unit: str = "it") -> None:
        self.desc, self.total, self.n, self.unit = desc, int(total), int(initial), unit
        self._start_n, self._start = self.n, time.monotonic()
        self._last = self._start
        self._every = _progress_seconds()
        self._bar = None
        if progress_enabled():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit)
        self._log = logging.getLogger(f"conta.{desc}")
        self._closed = False

    def update(self, row: dict | None = None, keys: tuple[str, ...] = (), n: int = 1) -> None:
        self.n += n
        extra = {k: row[k] for k in keys if row and k in row}
        if self._bar is not None:
            self._bar.update(n)
            if extra:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in extra.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self._every or self.n >= self.total:
            self._last = now
            self._line(now, extra)

    def _line(self, now: float, extra: dict) -> None:
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        pct = 100.0 * self.n / max(self.total, 1)
        parts = [f"{self.n}/{self.total} ({pct:.0f}%)"] + [f"{k} {v:.4g}" for k, v in extra.items()]
        parts.append(f"{rate:.3g} {self.unit}/s")
        if 0 < self.n < self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        self._log.info("%s: %s", self.desc, ", ".join(parts))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()


def track(items, desc: str, total: int | None = None, unit: str = "img"):
    """Iterate `items` with a `Progress` (the per-image steps' loops)."""
    progress = Progress(desc, len(items) if total is None else total, unit=unit)
    try:
        for item in items:
            yield item
            progress.update()
    finally:
        progress.close()
