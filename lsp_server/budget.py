"""Daily and monthly cloud spend limits, checked before a request goes out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lsp_server.ledger import Ledger, day_bounds, month_bounds
from lsp_server.prices import Prices

WARN_AT = 0.8
"""Fraction of a budget at which the user is warned, once per day or month."""


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a cloud request may go out, why not, and a warning to show once."""

    allowed: bool
    message: str | None = None
    warn: str | None = None


@dataclass(frozen=True)
class _Period:
    label: str
    limit: float
    bounds: Callable[[float], tuple[float, float]]


class Budget:
    """Cloud spend limits per local calendar day and month, counted from the shared ledger.

    Days and months are the user's local time, the same periods `tandem usage` shows.
    """

    def __init__(self, ledger: Ledger, prices: Prices, daily_usd: float | None, monthly_usd: float | None) -> None:
        self._ledger = ledger
        self._prices = prices
        self._periods = [
            _Period(label, limit, bounds)
            for label, limit, bounds in (
                ("today", daily_usd, day_bounds),
                ("this month", monthly_usd, month_bounds),
            )
            if limit is not None
        ]
        self._warned: set[tuple[str, float]] = set()

    def check(self, model: str, prompt_tokens: int, max_output_tokens: int, now: float | None = None) -> BudgetDecision:
        """Estimated cost (prompt tokens + max output) against what is left today / this month."""
        if not self._periods:
            return BudgetDecision(allowed=True)
        now = time.time() if now is None else now
        estimate = self._prices.cost(model, prompt_tokens, max_output_tokens)
        states = []
        for period in self._periods:
            start, reset = period.bounds(now)
            used = self._ledger.spent_usd(start)
            if used >= period.limit or used + estimate > period.limit:
                return BudgetDecision(False, _refusal(period, used, estimate, reset, now))
            states.append((period, used, start, reset))
        warnings = []
        for period, used, start, reset in states:
            key = (period.label, start)
            if used + estimate >= WARN_AT * period.limit and key not in self._warned:
                self._warned.add(key)
                warnings.append(
                    f"Cloud spend {period.label} reaches {_usd(used + estimate)} of the "
                    f"{_usd(period.limit)} budget with this request; {_resets(reset, now)}."
                )
        return BudgetDecision(True, warn=" ".join(warnings) or None)


def _refusal(period: _Period, used: float, estimate: float, reset: float, now: float) -> str:
    cost = "" if used >= period.limit else f" and this request could cost up to {_usd(estimate)}"
    return (
        f"Cloud budget reached: {_usd(used)} of {_usd(period.limit)} spent {period.label}{cost}; {_resets(reset, now)}."
    )


def _resets(reset: float, now: float) -> str:
    minutes = max(1, round((reset - now) / 60))
    hours, minutes = divmod(minutes, 60)
    wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    when = datetime.fromtimestamp(reset).strftime("%Y-%m-%d %H:%M")
    return f"it resets at {when} local time (in {wait})"


def _usd(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"
