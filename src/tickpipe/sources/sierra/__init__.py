"""Sierra Chart: the live .scid tail and the DTC client (``tickpipe import scid|depth`` for history).

``build`` makes the tail when ``SIERRA_SCID_DIR`` is set and the DTC client when
``SIERRA_DTC_HOST`` is set; both may run at once (sources "sierra" and "sierra-dtc").
"""

from __future__ import annotations

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.sources.base import Source


def build(settings: Settings, clock: Clock) -> list[Source]:
    sources: list[Source] = []
    if settings.sierra_scid_dir is not None:
        from tickpipe.sources.sierra.tail import ScidTail

        sources.append(ScidTail(settings, clock))
    if settings.sierra_dtc_host is not None:
        from tickpipe.sources.sierra.dtc import DtcClient

        sources.append(DtcClient(settings, clock))
    return sources
