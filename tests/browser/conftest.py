"""Every pipeline process a browser test starts is reaped after it, even when it fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..e2e.helpers import PipelineProcess


@pytest.fixture(autouse=True)
def _reap_processes() -> Iterator[None]:
    yield
    PipelineProcess.reap_all()
