"""``kcbus ledger …`` and ``kcbus resend``: the operator's commands on the message store.

    kcbus ledger list [--status S]… [--partner P] [--route R] [--type T] [--since T] [--json]
    kcbus ledger show REF [--json]            history of one message; never its content
    kcbus ledger stats                        messages per status
    kcbus resend REF… | --status DEAD --route R   [--reason WHY] [--actor WHO]
    kcbus ledger resolve REF… [--reason WHY] [--actor WHO]
    kcbus ledger backup FILE / restore FILE [--replace]
    kcbus ledger prune [--config C | --older-than 90d]
    kcbus ledger rotate-key                   new content key; old content re-encrypted

``REF`` is a message UUID (or other message ID), ``#<ledger id>`` or an envelope ID.
The ledger is ``--ledger URL``, else ``KCBUS_LEDGER``, else ``sqlite:///var/ledger.sqlite``.
Actions record ``--actor`` (default: the OS user) and ``--reason`` as ledger events.
Exit codes: 0 done, 1 not found / nothing acted on, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kcbus.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from kcbus.ledger import ActionOutcome, Kind, Ledger, MessageFilter, MessageRow, Status

__all__ = ["register"]

#: Recorded when an operator acts without saying why (the action is still audited with who).
NO_REASON = "no reason given"
_RELATIVE = re.compile(r"^(\d+)\s*(m|h|d|w)$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def _when(text: str) -> datetime:
    """``2h``, ``3d`` (that long ago) or an ISO 8601 time (UTC if no zone is given)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return datetime.now(UTC) - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use 2h, 3d or ISO 8601)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _duration(text: str) -> timedelta:
    match = _RELATIVE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90d, 12h, 2w)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _status(text: str) -> Status:
    try:
        return Status(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"no status {text!r} (one of {', '.join(s.value for s in Status)})"
        ) from None


def _ledger_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        metavar="URL",
        default=None,
        help="ledger database URL (default: $KCBUS_LEDGER or sqlite:///var/ledger.sqlite)",
    )


def _actor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        default=NO_REASON,
        help=f"why (recorded in the ledger; default: {NO_REASON!r})",
    )
    parser.add_argument(
        "--actor", default=None, help="who (recorded in the ledger; default: your OS user name)"
    )


def _actor(args: argparse.Namespace) -> str:
    return str(args.actor or os.environ.get("KCBUS_ACTOR") or getpass.getuser())


def _open(args: argparse.Namespace) -> Ledger:
    return Ledger(args.ledger)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = subparsers.add_parser(
        "ledger",
        help="inspect and maintain the message ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = ledger.add_subparsers(dest="ledger_command", required=True)

    p = commands.add_parser("list", help="messages, newest first")
    _ledger_option(p)
    p.add_argument("--status", type=_status, action="append", default=[], help="(repeatable)")
    p.add_argument("--partner", help="sender or recipient (partner ID)")
    p.add_argument("--route", help="route (flow) name")
    p.add_argument("--type", dest="message_type", help="message type, * and ? allowed")
    p.add_argument("--since", type=_when, help="received since (2h, 3d or ISO 8601)")
    p.add_argument("--until", type=_when, help="received before")
    p.add_argument("--receipts", action="store_true", help="include kcbus's own receipts")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_list)

    p = commands.add_parser("show", help="one message's history (never its content)")
    _ledger_option(p)
    p.add_argument("ref", metavar="REF", help="message UUID/ID, #ledger-id or envelope ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_show)

    p = commands.add_parser("stats", help="messages per status")
    _ledger_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_stats)

    p = commands.add_parser("resolve", help="mark failed messages as dealt with")
    _ledger_option(p)
    p.add_argument("refs", nargs="*", metavar="REF")
    p.add_argument("--status", type=_status, action="append", default=[])
    p.add_argument("--route")
    _actor_options(p)
    p.set_defaults(handler=_resolve)

    p = commands.add_parser("backup", help="copy the whole ledger into FILE (SQLite)")
    _ledger_option(p)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--actor", default=None)
    p.set_defaults(handler=_backup)

    p = commands.add_parser("restore", help="load a backup FILE into an empty ledger")
    _ledger_option(p)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--replace", action="store_true", help="wipe a non-empty ledger first")
    p.add_argument("--actor", default=None)
    p.set_defaults(handler=_restore)

    p = commands.add_parser("prune", help="delete settled messages past their retention")
    _ledger_option(p)
    p.add_argument("--config", type=Path, help="partner/route config (retention per route)")
    p.add_argument("--older-than", type=_duration, help="retention for every route (90d)")
    p.add_argument("--actor", default=None)
    p.set_defaults(handler=_prune)

    p = commands.add_parser("rotate-key", help="new content key; re-encrypt stored content")
    _ledger_option(p)
    p.add_argument("--actor", default=None)
    p.set_defaults(handler=_rotate)

    resend = subparsers.add_parser(
        "resend",
        help="deliver messages again (recorded with who and why)",
        description="Re-send named messages, or all matching --status/--route.",
    )
    _ledger_option(resend)
    resend.add_argument("refs", nargs="*", metavar="REF")
    resend.add_argument("--status", type=_status, action="append", default=[])
    resend.add_argument("--route")
    resend.add_argument("--partner")
    _actor_options(resend)
    resend.set_defaults(handler=_resend)


# -- output ---------------------------------------------------------------------------------


def _ts(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _row_json(row: MessageRow) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "ledger_id": row.ledger_id,
        "uuid": row.uuid,
        "kind": str(row.kind),
        "receipt_type": row.receipt_type,
        "envelope_id": row.envelope_id,
        "route": row.route,
        "inspection": row.inspection,
        "sender": row.sender,
        "recipient": row.recipient,
        "message_type": row.message_type,
        "standard": row.standard,
        "version": row.version,
        "test": row.test,
        "status": str(row.status),
        "attempts": row.attempts,
        "next_attempt_at": None if row.next_attempt_at is None else row.next_attempt_at.isoformat(),
        "reason_code": row.reason_code,
        "reason": row.reason,
        "received_at": row.received_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "resolved_at": None if row.resolved_at is None else row.resolved_at.isoformat(),
        "resolved_by": row.resolved_by,
    }


def _list(args: argparse.Namespace) -> int:
    flt = MessageFilter(
        status=tuple(args.status),
        partner=args.partner,
        route=args.route,
        message_type=args.message_type,
        since=args.since,
        until=args.until,
        kind=None if args.receipts else Kind.MESSAGE,
    )
    with _open(args) as ledger:
        rows = ledger.search(flt, limit=args.limit)
    if args.json:
        print(json.dumps([_row_json(r) for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        print("no messages match")
        return EXIT_OK
    print(f"{'REF':<38} {'STATUS':<12} {'ROUTE':<14} {'FROM → TO':<30} {'TYPE':<32} RECEIVED")
    for r in rows:
        flow = f"{r.sender or '?'} → {r.recipient or '?'}"
        line = (
            f"{r.ref:<38} {r.status:<12} {r.route or '-':<14} {flow:<30} "
            f"{(r.message_type or '-')[:32]:<32} {_ts(r.received_at)}"
        )
        if r.reason_code:
            line += f"  [{r.reason_code}]"
        print(line)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        history = ledger.history(args.ref)
    m = history.message
    if args.json:
        print(
            json.dumps(
                {
                    "message": _row_json(m),
                    "events": [
                        {
                            "at": e.at.isoformat(),
                            "stage": e.stage,
                            "status": e.status,
                            "actor": e.actor,
                            "reason_code": e.reason_code,
                            "detail": e.detail,
                            "delivery_id": e.delivery_id,
                        }
                        for e in history.events
                    ],
                    "deliveries": [
                        {
                            "destination": d.destination,
                            "status": str(d.status),
                            "attempts": d.attempts,
                            "envelope_id": d.envelope_id,
                            "last_error_code": d.last_error_code,
                            "last_error": d.last_error,
                            "delivered_at": None
                            if d.delivered_at is None
                            else d.delivered_at.isoformat(),
                        }
                        for d in history.deliveries
                    ],
                    "receipts": [_row_json(r) for r in history.receipts],
                    "content_available": history.content_available,
                },
                indent=2,
            )
        )
        return EXIT_OK
    kind = f"{m.kind} ({m.receipt_type})" if m.receipt_type else str(m.kind)
    print(f"message      {m.ref}   ledger #{m.ledger_id}   {kind}")
    print(f"status       {m.status}" + (f"   resolved by {m.resolved_by}" if m.resolved else ""))
    if m.reason_code:
        print(f"reason       {m.reason_code}: {m.reason}")
    print(f"type         {m.message_type or '-'}   {m.standard or '-'} {m.version or ''}".rstrip())
    print(
        f"route        {m.route or '-'}   inspection {m.inspection or '-'}"
        + ("   TEST" if m.test else "")
    )
    print(f"from → to    {m.sender or '?'} → {m.recipient or '?'}")
    print(f"envelope     {m.envelope_id or '-'}   {m.size} bytes   via {m.source or '-'}")
    if m.end_to_end:
        print("content      sealed end-to-end for the recipient: the bus never held it")
    print("history")
    for e in history.events:
        status = e.status or ""
        code = f" [{e.reason_code}]" if e.reason_code else ""
        print(f"  {_ts(e.at)}  {e.stage:<12} {status:<12} {e.actor:<24} {e.detail or ''}{code}")
    if history.deliveries:
        print("deliveries")
        for d in history.deliveries:
            err = f"  last error [{d.last_error_code}] {d.last_error}" if d.last_error else ""
            print(
                f"  {d.destination:<16} {d.status:<10} attempts {d.attempts}  "
                f"envelope {d.envelope_id or '-'}{err}"
            )
    if history.receipts:
        print("receipts")
        for r in history.receipts:
            print(f"  {r.ref}  {r.message_type}  → {r.recipient}  {r.status}")
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        stats = ledger.stats()
    if args.json:
        print(json.dumps(stats))
    else:
        for status, count in sorted(stats.items()):
            print(f"{status:<14} {count}")
    return EXIT_OK


def _report(outcome: ActionOutcome) -> int:
    for row in outcome.acted:
        print(
            f"{outcome.action}: {row.ref} ({row.status} → "
            f"{'ROUTED' if outcome.action == 'resend' else 'resolved'})"
        )
    for ref, why in outcome.skipped:
        print(f"skipped: {ref}: {why}", file=sys.stderr)
    print(
        f"{len(outcome.acted)} {outcome.action}, {len(outcome.skipped)} skipped "
        f"(by {outcome.actor}: {outcome.reason})"
    )
    return EXIT_OK if outcome.acted else EXIT_INVALID


def _filter(args: argparse.Namespace) -> MessageFilter | None:
    if not (args.status or args.route or getattr(args, "partner", None)):
        return None
    return MessageFilter(
        status=tuple(args.status),
        route=args.route,
        partner=getattr(args, "partner", None),
        kind=None,
    )


def _resend(args: argparse.Namespace) -> int:
    flt = _filter(args)
    if not args.refs and flt is None:
        sys.stderr.write("kcbus: resend needs message references or --status/--route\n")
        return EXIT_USAGE
    with _open(args) as ledger:
        outcome = ledger.resend(
            args.refs, flt=flt, actor=_actor(args), reason=args.reason, now=datetime.now(UTC)
        )
    return _report(outcome)


def _resolve(args: argparse.Namespace) -> int:
    flt = _filter(args)
    if not args.refs and flt is None:
        sys.stderr.write("kcbus: resolve needs message references or --status/--route\n")
        return EXIT_USAGE
    with _open(args) as ledger:
        outcome = ledger.mark_resolved(
            args.refs, flt=flt, actor=_actor(args), reason=args.reason, now=datetime.now(UTC)
        )
    return _report(outcome)


def _backup(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        counts = ledger.backup(args.file, actor=_actor(args), now=datetime.now(UTC))
    print(f"backup written to {args.file}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    print("the content key file is not in the backup: keep a copy of it too")
    return EXIT_OK


def _restore(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        counts = ledger.restore(
            args.file, actor=_actor(args), now=datetime.now(UTC), replace=args.replace
        )
    print(f"restored from {args.file}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    if args.config is None and args.older_than is None:
        sys.stderr.write("kcbus: prune needs --config (retention per route) or --older-than\n")
        return EXIT_USAGE
    retention: dict[str | None, timedelta | None] = {}
    if args.config is not None:
        from kcbus.config import load

        config = load(args.config)
        retention = {name: route.retention for name, route in config.routes.items()}

    def period(route: str | None) -> timedelta | None:
        if route in retention:
            return retention[route]
        return args.older_than  # type: ignore[no-any-return]

    with _open(args) as ledger:
        removed = ledger.prune(now=datetime.now(UTC), retention=period, actor=_actor(args))
    print(f"pruned {removed} settled messages (with their events, content and receipts)")
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    with _open(args) as ledger:
        if ledger.keys.path is None:
            sys.stderr.write("kcbus: this ledger's content key is not kept in a file\n")
            return EXIT_USAGE
        kid = ledger.keys.rotate()
        moved = ledger.reencrypt(actor=_actor(args), now=datetime.now(UTC))
    print(f"new content key {kid}; {moved} blobs re-encrypted (older keys stay in the key file)")
    return EXIT_OK
