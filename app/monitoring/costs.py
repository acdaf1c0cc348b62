"""Token prices by model (`VIGIL_MODEL_PRICES`) and what the agents' tokens cost.

Format: comma-separated `model=input:output`, each price in USD per million tokens, e.g.
`nemotron=0:0,gpt-4o-mini=0.15:0.60`. A model that is not listed costs 0 and is named in
`unpriced_models`, so a missing price shows instead of reading as free. A malformed entry raises
`SettingsError` naming it (the request that prices answers 500), never a silent 0.
"""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings, SettingsError
from app.monitoring.rollups import Counts


def parse_prices(text: str) -> dict[str, tuple[float, float]]:
    prices: dict[str, tuple[float, float]] = {}
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        model, sep, rest = entry.rpartition("=")
        parts = rest.split(":")
        try:
            if not sep or not model.strip() or len(parts) != 2:
                raise ValueError
            inp, out = float(parts[0]), float(parts[1])
            if inp < 0 or out < 0:
                raise ValueError
        except ValueError:
            raise SettingsError(
                f"VIGIL_MODEL_PRICES: {entry!r} is not `model=input:output` (USD per million tokens)"
            ) from None
        prices[model.strip()] = (inp, out)
    return prices


def costs(settings: Settings, by_model: dict[str, Counts]) -> dict[str, Any]:
    """The dashboard's `costs`: tokens and estimated USD, in total and per model."""
    prices = parse_prices(settings.model_prices)
    rows, unpriced = [], []
    total_in = total_out = 0
    total_cost = 0.0
    for model, counts in sorted(by_model.items()):
        tokens = counts.input_tokens + counts.output_tokens
        if not model or (not tokens and model not in prices):
            continue  # jobs that named no model, or a model that spent nothing (the built-in analyser)
        price = prices.get(model)
        if price is None:
            unpriced.append(model)
            price = (0.0, 0.0)
        cost = (counts.input_tokens * price[0] + counts.output_tokens * price[1]) / 1_000_000
        total_in += counts.input_tokens
        total_out += counts.output_tokens
        total_cost += cost
        rows.append(
            {
                "model": model,
                "tokens": tokens,
                "input_tokens": counts.input_tokens,
                "output_tokens": counts.output_tokens,
                "cost": round(cost, 6),
            }
        )
    return {
        "total_tokens": total_in + total_out,
        "input_tokens": total_in,
        "output_tokens": total_out,
        "estimated_cost_usd": round(total_cost, 6),
        "cost_by_model": rows,
        "unpriced_models": unpriced,
    }
