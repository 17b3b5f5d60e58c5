"""Progress of a training run: examples per second and the ETA in the log, the last metrics."""

from __future__ import annotations

import dataclasses

from rawtf_ae import files


@dataclasses.dataclass
class Throughput:
    """Examples per second over the calls after the first (which traces and compiles)."""

    examples: int = 0
    seconds: float = 0.0
    calls: int = 0

    def add(self, examples: int, seconds: float, last: bool) -> None:
        if self.calls or (last and not self.seconds):
            self.examples += examples
            self.seconds += seconds
        self.calls += 1


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def read_previous_metrics(path: str) -> dict:
    try:
        return files.read_json(path, "metrics file")
    except (OSError, ValueError):
        return {}
