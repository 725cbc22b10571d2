"""The metrics routes (filled in by the dashboard issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
