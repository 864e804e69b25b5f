"""Header profiles, one module per message family. Order matters: first match wins."""

from __future__ import annotations

from xoev._header import HeaderProfile
from xoev._profiles import cda, netex, xdomea, xjustiz, xoev_g2g

__all__ = ["DEFAULT_PROFILES"]

DEFAULT_PROFILES: tuple[HeaderProfile, ...] = (
    xoev_g2g.UNQUALIFIED,
    xoev_g2g.QUALIFIED,
    xjustiz.PROFILE,
    cda.PROFILE,
    netex.PROFILE,
    xdomea.PROFILE,
)
