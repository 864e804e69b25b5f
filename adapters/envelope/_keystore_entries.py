"""The keystore's index entries, and the order in which a partner's keys are newest.

``order`` decides which key seal/open pick (the valid one with the latest ``nbf``, then
``iat``), how keys are listed, and which key prune protects as current: one order for all
three, so prune never removes the key the hot path would pick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.envelope._jose import JSON
from adapters.envelope._keys import KeyInfo

__all__ = ["Entry", "newest_first", "order"]


@dataclass
class Entry:
    info: KeyInfo
    jwk: JSON  # public JWK with kcbus members


def order(info: KeyInfo) -> tuple[float, float]:
    nbf = info.not_before.timestamp() if info.not_before else float("-inf")
    iat = info.created.timestamp() if info.created else float("-inf")
    return nbf, iat


def newest_first(infos: Sequence[KeyInfo]) -> list[KeyInfo]:
    return sorted(infos, key=lambda i: (order(i), i.use == "sig"), reverse=True)
