"""Replay protection: an envelope ID is accepted once within the replay window.

:func:`~adapters.envelope.open_envelope` rejects envelopes created more than ``max_age`` ago
(or more than ``max_skew`` in the future) as :class:`Expired`; within that window a
:class:`ReplayGuard` remembers which envelope IDs were opened. So a guard only has to remember
IDs for ``max_age + max_skew``: anything older is refused by its signed creation time anyway.

The runtime supplies a persistent guard (its ledger knows every envelope ID); this module has
the in-memory one for tests, the CLI and single-process use.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_SKEW", "InMemoryReplayGuard", "ReplayGuard"]

#: Oldest envelope accepted: long enough for a transport outage over a long weekend.
DEFAULT_MAX_AGE: Final = timedelta(days=7)
#: Clock difference tolerated between partners.
DEFAULT_MAX_SKEW: Final = timedelta(minutes=5)


@runtime_checkable
class ReplayGuard(Protocol):
    """Remembers opened envelope IDs. ``seen`` is asked after the signature checks out and
    before anything is returned; ``remember`` after a successful open."""

    def seen(self, envelope_id: str) -> bool: ...

    def remember(self, envelope_id: str, created: datetime) -> None: ...


class InMemoryReplayGuard:
    """A :class:`ReplayGuard` in a dict, forgetting IDs older than the window."""

    def __init__(self, window: timedelta = DEFAULT_MAX_AGE + DEFAULT_MAX_SKEW) -> None:
        self.window = window
        self._ids: dict[str, float] = {}
        self._by_age: list[tuple[float, str]] = []
        self._newest = float("-inf")

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, envelope_id: str) -> bool:
        return envelope_id in self._ids

    def remember(self, envelope_id: str, created: datetime) -> None:
        stamp = created.timestamp()
        self._ids[envelope_id] = stamp
        heapq.heappush(self._by_age, (stamp, envelope_id))
        self._newest = max(self._newest, stamp)
        horizon = self._newest - self.window.total_seconds()
        while self._by_age and self._by_age[0][0] < horizon:
            old_stamp, old_id = heapq.heappop(self._by_age)
            if self._ids.get(old_id) == old_stamp:
                del self._ids[old_id]
