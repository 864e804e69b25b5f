"""The demo's traffic: a realistic mix per flow, and what should become of each message.

Per flow (partner IDs of ``config/partners.yaml``):

==============  ===============================================================================
entlassbrief    Klinikum → Praxis, end-to-end: letters (valid), one letter sent twice
                (DUPLICATE)
bauantrag       Gemeinde → Landratsamt: an application with a large plan attachment, one
                without; Stadt → Landratsamt: a broken application (REJECTED, schema-invalid);
                Landratsamt → Gemeinde: the formal check of the first (receipts both ways)
tarifdaten      Tarifverbund → Nachbarverbund + Ticketing feed: the day's NeTEx publication
                (large), and the same publication dropped again (DUPLICATE)
kommunen        Landratsamt → both municipalities: a circular each; Gemeinde → Landratsamt:
                an answer; a circular flagged ``test`` for a production recipient (REJECTED)
==============  ===============================================================================

:func:`send_demo_traffic` sends it all and returns one :class:`Expectation` per message.
Which partners play which part is looked up by role in :data:`ROLES`, so a config with other
partner IDs can reuse the mix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from kcbus.airflow.demo import documents as docs
from kcbus.airflow.demo.world import DemoWorld, Sent

__all__ = ["ROLES", "Expectation", "plan_file", "send_demo_traffic"]

#: Demo role → partner ID in config/partners.yaml.
ROLES = {
    "district": "lra-musterkreis",
    "municipality": "gemeinde-musterdorf",
    "town": "stadt-beispielstadt",
    "hospital": "klinikum-musterkreis",
    "practice": "praxis-dr-beispiel",
    "tariff": "tarif-rmv",
}


@dataclass(frozen=True)
class Expectation:
    """What should become of one sent message (checked against the ledger at the end)."""

    sent: Sent
    #: "delivered" (DELIVERED or ACKNOWLEDGED), "rejected" or "duplicate".
    outcome: str
    reason_code: str | None = None
    recipients: tuple[str, ...] = ()


def plan_file(folder: Path, megabytes: int) -> Path:
    """A building plan of ``megabytes`` MiB (a PDF header, then incompressible bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lageplan-{megabytes}mb.pdf"
    if path.exists() and path.stat().st_size == megabytes << 20:
        return path
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as out:
        out.write(b"%PDF-1.7\n% kcbus demo plan\n")
        remaining = (megabytes << 20) - out.tell()
        while remaining > 0:
            chunk = os.urandom(min(remaining, 1 << 20))
            out.write(chunk)
            remaining -= len(chunk)
    tmp.rename(path)
    return path


def send_demo_traffic(
    world: DemoWorld,
    *,
    now: Callable[[], datetime],
    scratch: Path,
    large_mb: int = 64,
    letters: int = 3,
    tariff_zones: int = 20_000,
    flows: tuple[str, ...] = ("entlassbrief", "bauantrag", "tarifdaten", "kommunen"),
) -> list[Expectation]:
    """Send the demo mix (see module docstring); ``now`` gives the sending time."""
    out: list[Expectation] = []
    r = ROLES
    district, municipality, town = (world.office(r[k]) for k in ("district", "municipality",
                                                                    "town"))

    def new_id() -> str:
        return str(uuid.uuid4())

    if "entlassbrief" in flows:
        hospital, practice = world.office(r["hospital"]), world.office(r["practice"])
        first: bytes | None = None
        for n in range(1, letters + 1):
            t = now()
            letter = docs.entlassbrief(
                document_id=f"EB-{t:%Y%m%d}-{uuid.uuid4().hex[:8]}", set_id=f"SET-{n}",
                created=t, hospital=hospital, practice=practice, patient_number=n,
            )
            first = first or letter
            sent = world.send(r["hospital"], letter, flow="entlassbrief", now=t,
                              end_to_end_for=r["practice"])
            out.append(Expectation(sent, "delivered", recipients=(r["practice"],)))
        assert first is not None
        # The hospital's system sends the first letter again (a new envelope, same document).
        sent = world.send(r["hospital"], first, flow="entlassbrief", now=now(),
                          end_to_end_for=r["practice"])
        out.append(Expectation(sent, "duplicate", reason_code="duplicate"))

    if "bauantrag" in flows:
        t = now()
        antrag = docs.bauantrag(
            message_id=new_id(), created=t, author=municipality, reader=district,
            reference=f"BA-{t:%Y}-0815", plans=(f"lageplan-{large_mb}mb.pdf",),
        )
        plan = plan_file(scratch / "plans", large_mb)
        sent = world.send(r["municipality"], antrag, flow="bauantrag", now=t,
                          attachments=[plan])
        out.append(Expectation(sent, "delivered", recipients=(r["district"],)))
        antrag_id = sent.message_id

        t = now()
        small = docs.bauantrag(message_id=new_id(), created=t, author=town, reader=district,
                               reference=f"BA-{t:%Y}-0816")
        sent = world.send(r["town"], small, flow="bauantrag", now=t)
        out.append(Expectation(sent, "delivered", recipients=(r["district"],)))

        t = now()
        bad = docs.broken(docs.bauantrag(message_id=new_id(), created=t, author=town,
                                         reader=district, reference=f"BA-{t:%Y}-0817"))
        sent = world.send(r["town"], bad, flow="bauantrag", now=t)
        out.append(Expectation(sent, "rejected", reason_code="schema-invalid"))

        t = now()
        check = docs.formelle_pruefung(
            message_id=new_id(), created=t, author=district, reader=municipality,
            antrag_id=antrag_id, aktenzeichen=f"63-{t:%Y}-0815", complete=True,
        )
        sent = world.send(r["district"], check, flow="bauantrag", now=t)
        out.append(Expectation(sent, "delivered", recipients=(r["municipality"],)))

    if "tarifdaten" in flows:
        t = now()
        publication = docs.tarif_publication(
            participant="RMV", created=t, authority="rmv", zones=tariff_zones,
            valid_from=(t + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                      microsecond=0),
        )
        sent = world.send(r["tariff"], publication, flow="tarifdaten", now=t)
        out.append(Expectation(sent, "delivered", recipients=("tarif-vab", "ticketing-feed")))
        # The authority's export job runs twice: the same publication is dropped again.
        sent = world.send(r["tariff"], publication, flow="tarifdaten", now=now())
        out.append(Expectation(sent, "duplicate", reason_code="duplicate"))

    if "kommunen" in flows:
        for reader_role in ("municipality", "town"):
            t = now()
            circular = docs.rundschreiben(
                message_id=new_id(), created=t, author=district,
                reader=world.office(r[reader_role]), title="Abfrage Kindertagespflege",
            )
            sent = world.send(r["district"], circular, flow="kommunen", now=t)
            out.append(Expectation(sent, "delivered", recipients=(r[reader_role],)))
        t = now()
        answer = docs.mitteilung(message_id=new_id(), created=t, author=municipality,
                                 reader=district, bezug=None)
        sent = world.send(r["municipality"], answer, flow="kommunen", now=t)
        out.append(Expectation(sent, "delivered", recipients=(r["district"],)))
        t = now()
        trial = docs.rundschreiben(message_id=new_id(), created=t, author=district,
                                   reader=municipality, title="Testlauf", test=True)
        sent = world.send(r["district"], trial, flow="kommunen", now=t)
        out.append(Expectation(sent, "rejected", reason_code="test-to-production"))
    return out
