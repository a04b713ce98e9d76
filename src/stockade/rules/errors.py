"""The error of the rule language: a rule, list or macro that cannot be loaded."""

from __future__ import annotations

from stockade.model import StockadeError


class RuleError(StockadeError):
    """A rule, list or macro that cannot be loaded: the message names the file and line."""
