"""Spend estimates for ``--dry-run``: jobs counted by duration and resolution, times a price."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import attrs

from .._models import VideoRequest

__all__ = ["ESTIMATED_PRICE_PER_JOB_USD", "Estimate", "EstimateLine", "estimate"]

#: Estimated price in US dollars of one Hailuo-02 video, by (duration in seconds, resolution).
#: These are the per-video list prices MiniMax published for Hailuo-02 in 2025; the gateway
#: that serves the API may charge otherwise, and prices change. Only ``--dry-run`` reads this
#: table, and always says its total is an estimate; ``--price-per-job`` overrides it.
ESTIMATED_PRICE_PER_JOB_USD: Mapping[tuple[int, str], float] = {
    (6, "768P"): 0.28,
    (10, "768P"): 0.56,
    (6, "1080P"): 0.49,
}


@attrs.frozen
class EstimateLine:
    """The jobs of one duration and resolution, and what they would cost."""

    duration: int
    resolution: str
    jobs: int
    price_per_job: float | None

    @property
    def subtotal(self) -> float | None:
        """jobs x price, or None when the price is not known."""
        return None if self.price_per_job is None else self.jobs * self.price_per_job


@attrs.frozen
class Estimate:
    """Jobs by kind and the estimated spend; ``source`` says where the prices came from."""

    lines: tuple[EstimateLine, ...]
    source: str

    @property
    def jobs(self) -> int:
        """All jobs counted."""
        return sum(line.jobs for line in self.lines)

    @property
    def total(self) -> float | None:
        """The estimated spend, or None if some kind of job has no known price."""
        subtotals = [line.subtotal for line in self.lines]
        if any(subtotal is None for subtotal in subtotals):
            return None
        return sum(subtotal for subtotal in subtotals if subtotal is not None)


def estimate(requests: Iterable[VideoRequest], *, price_per_job: float | None = None) -> Estimate:
    """Count the jobs by (duration, resolution) and price them."""
    counts = Counter((request.duration, request.resolution) for request in requests)
    lines = []
    for duration, resolution in sorted(counts, key=lambda kind: (kind[0], kind[1] != "768P")):
        price = (
            price_per_job
            if price_per_job is not None
            else ESTIMATED_PRICE_PER_JOB_USD.get((duration, resolution))
        )
        lines.append(EstimateLine(duration, resolution, counts[(duration, resolution)], price))
    source = (
        "--price-per-job"
        if price_per_job is not None
        else "built-in table ESTIMATED_PRICE_PER_JOB_USD (MiniMax list prices, 2025)"
    )
    return Estimate(lines=tuple(lines), source=source)
