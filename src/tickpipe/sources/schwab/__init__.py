"""Schwab Trader API feed (being built: see the Schwab issue)."""
