"""Pruning a keystore: removing keys that no envelope can need any more.

What may go is decided per key by ``_keys.prunable`` (the dates); here the current key of each
use of every partner is protected whatever its dates, the public JWKs are removed before the
private files, and removed key IDs are remembered in the partner's ``.jwks`` (``pruned``), so
re-importing an old key set never brings them back. Entry point: :meth:`Keystore.prune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from adapters.envelope._errors import NoSuchPartner
from adapters.envelope._keys import KeyInfo, prunable
from adapters.envelope._keystore_entries import Entry, order
from adapters.envelope._keystore_files import check_partner_id, fsync_dir

if TYPE_CHECKING:
    from adapters.envelope._keystore import Keystore

__all__ = ["PrunedKey", "prune"]


@dataclass(frozen=True, slots=True)
class PrunedKey:
    """One key :meth:`Keystore.prune` removed (or, in a dry run, would remove): its private
    half, its public JWK, or both."""

    info: KeyInfo
    private: bool
    public: bool


def current_kids(entries: Sequence[Entry], now: datetime) -> set[str]:
    """What prune never touches: per use, the key seal/open would pick now (the newest valid
    one), else — all expired — the newest unrevoked one."""
    current: dict[str, tuple[bool, tuple[float, float], KeyInfo]] = {}
    for entry in entries:
        info = entry.info
        if info.revoked_at is not None:
            continue
        rank = (info.valid_at(now), order(info))
        best = current.get(info.use)
        if best is None or rank > best[:2]:
            current[info.use] = (*rank, info)
    return {info.kid for _, _, info in current.values()}


def prune(
    store: Keystore,
    *,
    now: datetime,
    partner: str | None,
    grace: timedelta,
    keep_private: timedelta | None,
    dry_run: bool,
) -> list[PrunedKey]:
    """:meth:`Keystore.prune` (documented there, with the defaults), on ``store``."""
    if partner is not None:
        check_partner_id(partner)
    plan: list[PrunedKey] = []
    with store._locked():
        if partner is not None and partner not in store._entries:
            raise NoSuchPartner(partner)
        for name in [partner] if partner is not None else sorted(store._entries):
            entries = store._entries[name]
            protected = current_kids(entries, now)
            mine: list[PrunedKey] = []
            for entry in entries:
                if entry.info.kid in protected:
                    continue
                private, public = prunable(entry.info, now, grace, keep_private)
                if private or public:
                    mine.append(PrunedKey(entry.info, private, public))
            plan.extend(mine)
            if not dry_run:
                remove(store, name, entries, mine)
        if not dry_run and plan:
            store._audit(
                now,
                "pruned",
                partners=sorted({k.info.partner for k in plan}),
                private=[k.info.kid for k in plan if k.private],
                public=[k.info.kid for k in plan if k.public],
            )
    return plan


def remove(
    store: Keystore, partner: str, entries: Sequence[Entry], doomed: Sequence[PrunedKey]
) -> None:
    """The public JWKs first, then the private files: a crash in between leaves private
    files of pruned key IDs, which nothing uses and the next prune deletes."""
    public = {k.info.kid for k in doomed if k.public}
    if public:
        store._pruned[partner] = [*store._pruned.get(partner, []), *sorted(public)]
        store._save_public(partner, [e.jwk for e in entries if e.info.kid not in public])
    folder = store._private_dir / partner
    if not folder.is_dir():
        return
    private = {k.info.kid for k in doomed if k.private} | set(store._pruned.get(partner, ()))
    for file in folder.glob("*.jwe"):
        kid = file.name.removesuffix(".jwe")
        if kid in private:
            file.unlink(missing_ok=True)
    fsync_dir(folder)
