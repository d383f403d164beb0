"""Cloud model list prices (USD per million tokens) and what a request costs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

# What may follow a priced name in a provider's model id: dates, snapshots, "-latest", "-preview".
_VERSION_SUFFIX = re.compile(r"(-(latest|preview|exp|\d[\d-]*))+")


@dataclass(frozen=True)
class Price:
    """USD per million tokens; cached input falls back to the input price."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


class Prices:
    """The price table: the packaged data file plus user overrides."""

    def __init__(self, table: Mapping[str, Price], date: str, energy_usd_per_hour: float | None = None) -> None:
        self._table = {name.lower(): price for name, price in table.items()}
        self.date = date
        """The date the packaged table was written as of."""
        self.energy_usd_per_hour = energy_usd_per_hour
        """Optional estimate of what an hour of local generation costs; None means free."""
        self._lookups: dict[str, Price | None] = {}

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        *,
        energy_usd_per_hour: float | None = None,
    ) -> Prices:
        """The packaged table plus overrides: `{model: {"input", "output", "cachedInput"?}}`."""
        data = json.loads(resources.files("lsp_server").joinpath("data/prices.json").read_text())
        table = {name: _price(spec) for name, spec in data["models"].items()}
        table.update({name: _price(spec) for name, spec in (overrides or {}).items()})
        return cls(table, str(data["date"]), energy_usd_per_hour)

    def price(self, model: str) -> Price | None:
        """The price of a model id; dated snapshots (`gpt-4o-2024-08-06`) match their family."""
        if model not in self._lookups:
            self._lookups[model] = self._match(model)
        return self._lookups[model]

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for one request; 0.0 for models without a price (local ones)."""
        price = self.price(model)
        if price is None:
            return 0.0
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_rate = price.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = price.input_per_mtok
        return (
            (prompt_tokens - cached) * price.input_per_mtok
            + cached * cached_rate
            + completion_tokens * price.output_per_mtok
        ) / 1e6

    def energy_cost(self, total_ms: float) -> float:
        """USD of running the local model for `total_ms`; 0.0 unless an hourly rate is set."""
        if not self.energy_usd_per_hour:
            return 0.0
        return total_ms / 3.6e6 * self.energy_usd_per_hour

    def _match(self, model: str) -> Price | None:
        # Routers and Gemini's OpenAI endpoint prefix ids: "openai/gpt-4o", "models/gemini-2.5-pro".
        name = model.rsplit("/", 1)[-1].lower()
        if name in self._table:
            return self._table[name]
        families = [
            family
            for family in self._table
            if name.startswith(family + "-") and _VERSION_SUFFIX.fullmatch(name[len(family) :])
        ]
        return self._table[max(families, key=len)] if families else None


def _price(spec: Mapping[str, Any]) -> Price:
    cached = spec.get("cachedInput")
    return Price(
        input_per_mtok=float(spec["input"]),
        output_per_mtok=float(spec["output"]),
        cached_input_per_mtok=None if cached is None else float(cached),
    )
