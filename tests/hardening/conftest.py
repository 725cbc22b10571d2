"""The API fixtures of tests/api (a real pipeline without live sources, and the same API on
a loopback port), for the hardening tests."""

from __future__ import annotations

from ..api.conftest import Api, api, served

__all__ = ["Api", "api", "served"]
