"""Every pipeline process a test starts is reaped after it, even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import PipelineProcess


@pytest.fixture(autouse=True)
def _reap_processes() -> Iterator[None]:
    yield
    PipelineProcess.reap_all()
