"""``kcbus keys …``, ``kcbus seal`` and ``kcbus open``: the partner's envelope toolkit.

    kcbus keys new     --partner ID --profile modern|fitconnect [--rsa-bits 4096] [--valid-days N]
    kcbus keys export  --partner ID [-o FILE]            public JWK set (stdout by default)
    kcbus keys import  --partner ID FILE                 a partner's public JWK set
    kcbus keys rotate  [--partner ID] [--overlap-days 14] [--not-before ISO-TIME]
    kcbus keys revoke  --partner ID --kid KID [--reason TEXT]
    kcbus keys list    [--partner ID] [--json]
    kcbus keys prune   [--partner ID] [--dry-run] [--max-age-hours H]
                       [--keep-private-days D | --config FILE] [--json]
    kcbus keys passphrase                               re-encrypt private keys, new passphrase
    kcbus seal --from ID --to ID MESSAGE [--attach FILE]... [--via BUS] -o ENVELOPE
    kcbus open ENVELOPE -o DIR [--label] [--max-age-hours H] [--json]

Every command takes ``--keystore DIR`` (default: ``$KCBUS_KEYSTORE``); only ``new`` and
``import`` create a keystore, the others refuse a folder that holds none (a typo is not an empty
keystore). The passphrase of the private keys comes from ``$KCBUS_KEYSTORE_PASSPHRASE``, else
the file named by ``$KCBUS_KEYSTORE_PASSPHRASE_FILE`` (owner-readable only), else a prompt;
``keys passphrase`` takes the new one from ``$KCBUS_KEYSTORE_NEW_PASSPHRASE`` or a prompt
asked twice. Exit codes: 0 done, 1 envelope rejected (tampered, not for us, expired, …),
2 usage or keystore problem. ``open`` writes nothing unless the whole envelope verified.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import json
import mimetypes
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.envelope import (
    DEFAULT_KEEP_PRIVATE,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_SKEW,
    DEFAULT_OVERLAP,
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    Attachment,
    EnvelopeRejected,
    KeyInfo,
    Keystore,
    KeystoreError,
    PrunedKey,
    RoutingLabel,
    kept_stored_validity,
    open_envelope,
    open_label,
    seal,
)

__all__ = ["register"]

EXIT_OK = 0
EXIT_USAGE = 2
KEYSTORE_ENV = "KCBUS_KEYSTORE"
NEW_PASSPHRASE_ENV = "KCBUS_KEYSTORE_NEW_PASSPHRASE"
_KEEP_DAYS = round(DEFAULT_KEEP_PRIVATE.total_seconds() / 86400)
#: Beyond the ledger retention: how long a message may wait unsettled (downtime, retries).
_UNSETTLED_MARGIN = timedelta(days=35)
_PASSPHRASE_HELP = (
    f"Passphrase of the private keys: ${PASSPHRASE_ENV}, else the file named by "
    f"${PASSPHRASE_FILE_ENV} (mode 0600/0400), else a prompt."
)


def _keystore_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--keystore", metavar="DIR", type=Path,
                        default=os.environ.get(KEYSTORE_ENV) or None,
                        help=f"keystore directory (default: ${KEYSTORE_ENV})")
    return parent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _keystore_options()
    keys = subparsers.add_parser("keys", help="manage envelope keys (ours and partners')",
                                 description="Manage the keystore: identities, partner keys.",
                                 epilog=_PASSPHRASE_HELP)
    actions = keys.add_subparsers(dest="keys_command", required=True,
                                  parser_class=type(keys))

    new = actions.add_parser("new", parents=[common], help="create signing + encryption keys")
    new.add_argument("--partner", required=True, help="our identity (partner ID)")
    new.add_argument("--profile", required=True, choices=["modern", "fitconnect"])
    new.add_argument("--rsa-bits", type=int, choices=[3072, 4096], default=4096,
                     help="RSA key size for fitconnect (FIT-Connect requires 4096)")
    new.add_argument("--valid-days", type=int, default=730, help="validity (default 730 days)")
    new.set_defaults(handler=_one_line(_keys_new))

    export = actions.add_parser("export", parents=[common], help="print a public JWK set")
    export.add_argument("--partner", required=True)
    export.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    export.set_defaults(handler=_one_line(_keys_export))

    imp = actions.add_parser("import", parents=[common], help="import a partner's public keys")
    imp.add_argument("--partner", required=True)
    imp.add_argument("file", metavar="FILE", type=Path, help="JWK set (JSON)")
    imp.set_defaults(handler=_one_line(_keys_import))

    rotate = actions.add_parser("rotate", parents=[common],
                                help="new keys; old ones stay valid for an overlap")
    rotate.add_argument("--partner", help="default: every identity of the keystore")
    rotate.add_argument("--overlap-days", type=float,
                        default=DEFAULT_OVERLAP.total_seconds() / 86400)
    rotate.add_argument("--not-before", type=_aware_time, metavar="ISO-TIME",
                        help="activate the new keys later (pre-stage a rotation)")
    rotate.add_argument("--profile", choices=["modern", "fitconnect"],
                        help="switch profile with the rotation")
    rotate.add_argument("--rsa-bits", type=int, choices=[3072, 4096], default=4096)
    rotate.set_defaults(handler=_one_line(_keys_rotate))

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("--partner", required=True)
    revoke.add_argument("--kid", required=True)
    revoke.add_argument("--reason", default="unspecified")
    revoke.set_defaults(handler=_one_line(_keys_revoke))

    listing = actions.add_parser("list", parents=[common], help="list keys and their status")
    listing.add_argument("--partner")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_one_line(_keys_list))

    prune = actions.add_parser(
        "prune", parents=[common], help="remove retired keys no envelope can still need",
        description="Remove keys that were revoked or expired longer ago than the oldest "
        "envelope `kcbus open` accepts (--max-age-hours) plus the clock skew. Two kinds stay "
        "longer, because the bus opens envelopes stored in its ledger again (to re-seal "
        "attachments for a resend): our private decryption keys and partners' public signing "
        "keys are kept --keep-private-days after they expired (default "
        f"{_KEEP_DAYS}: a 365-day ledger retention plus a month), or, with --config, the "
        "longest route retention plus a month (forever if a route keeps messages forever). "
        "Revoked keys open nothing, so they go after the short grace. The current keys of "
        "every partner are always kept; a revoked key's public half stays until it would have "
        "expired, so exports still carry the revocation.")
    prune.add_argument("--partner", help="default: every partner of the keystore")
    prune.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    prune.add_argument("--max-age-hours", type=float,
                       default=DEFAULT_MAX_AGE.total_seconds() / 3600,
                       help="oldest envelope still to be opened (default: as kcbus open)")
    keep = prune.add_mutually_exclusive_group()
    keep.add_argument("--keep-private-days", type=float, default=_KEEP_DAYS, metavar="D",
                      help="how long keys that re-open stored envelopes outlive their expiry "
                      f"(default {_KEEP_DAYS}); at least the ledger retention")
    keep.add_argument("--config", type=Path, metavar="FILE",
                      help="bus configuration: keep them for its longest route retention "
                      "plus a month")
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(handler=_one_line(_keys_prune))

    passphrase = actions.add_parser(
        "passphrase", parents=[common], help="change the passphrase of the private keys",
        description="Re-encrypt every private key under a new passphrase, atomically: if "
        "interrupted, the keystore opens with the old or the new passphrase, never neither. "
        f"The new passphrase comes from ${NEW_PASSPHRASE_ENV} or a prompt asked twice.",
        epilog=_PASSPHRASE_HELP + " Update it wherever workers read it (secrets backend, "
        "credential file) right after the change.")
    passphrase.set_defaults(handler=_one_line(_keys_passphrase))

    sealer = subparsers.add_parser("seal", parents=[common], help="seal a message",
                                   description="Sign with --from's key, encrypt for --to.")
    sealer.add_argument("--from", dest="sender", required=True, metavar="ID")
    sealer.add_argument("--to", dest="recipient", required=True, metavar="ID")
    sealer.add_argument("message", metavar="MESSAGE", type=Path)
    sealer.add_argument("--attach", action="append", default=[], type=Path, metavar="FILE")
    sealer.add_argument("--via", metavar="BUS",
                        help="end-to-end: content for --to, a routing label for BUS")
    sealer.add_argument("--media-type", default=None, help="media type of MESSAGE")
    sealer.add_argument("-o", "--output", required=True, type=Path, metavar="ENVELOPE")
    sealer.set_defaults(handler=_one_line(_seal))

    opener = subparsers.add_parser("open", parents=[common], help="open and verify an envelope",
                                   description="Verify and decrypt; write message and "
                                   "attachments only if everything checks out.")
    opener.add_argument("envelope", metavar="ENVELOPE", type=Path)
    opener.add_argument("-o", "--output", type=Path, metavar="DIR",
                        help="folder for the message and attachments")
    opener.add_argument("--label", action="store_true",
                        help="open only the routing label (the bus's view of end-to-end mode)")
    opener.add_argument("--max-age-hours", type=float,
                        default=DEFAULT_MAX_AGE.total_seconds() / 3600)
    opener.add_argument("--json", action="store_true")
    opener.set_defaults(handler=_one_line(_open))


def _one_line(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """File-system errors become one line and exit 2 (kcbus.cli.main prints KcbusErrors)."""

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise KeystoreError(f"{exc.strerror or type(exc).__name__}:{where}") from exc

    return wrapper


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _open_keystore(args: argparse.Namespace, *, create: bool = False) -> Keystore:
    if args.keystore is None:
        raise KeystoreError(f"no keystore: pass --keystore DIR or set ${KEYSTORE_ENV}")
    path: Path = args.keystore
    if not create and not (path / "partners").is_dir():
        raise KeystoreError(f"no keystore at {path} (create one with `kcbus keys new`)")
    return Keystore(path)


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_json(info: KeyInfo, now: datetime) -> dict[str, object]:
    return {
        "partner": info.partner, "kid": info.kid, "use": info.use, "alg": info.alg,
        "profile": info.profile, "status": info.status(now), "private": info.private,
        "not_before": _time(info.not_before), "expires": _time(info.expires),
        "revoked_at": None if info.revoked_at is None else _time(info.revoked_at),
    }


def _print_keys(infos: list[KeyInfo], now: datetime) -> None:
    for info in infos:
        holder = "private" if info.private else "public"
        print(f"{info.partner}  {info.use}  {info.alg:<14} {info.kid}  {info.status(now):<8} "
              f"{_time(info.not_before)} .. {_time(info.expires)}  {holder}")


def _keys_new(args: argparse.Namespace) -> int:
    store, now = _open_keystore(args, create=True), _now()
    infos = store.create_identity(args.partner, args.profile, now=now,
                                  valid_for=timedelta(days=args.valid_days),
                                  rsa_bits=args.rsa_bits)
    _print_keys(infos, now)
    return EXIT_OK


def _keys_export(args: argparse.Namespace) -> int:
    text = json.dumps(_open_keystore(args).export_public(args.partner), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return EXIT_OK


def _keys_import(args: argparse.Namespace) -> int:
    try:
        jwks = json.loads(args.file.read_bytes())
    except OSError as exc:
        raise KeystoreError(f"cannot read {args.file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeystoreError(f"{args.file} is not JSON") from exc
    if not isinstance(jwks, dict):
        raise KeystoreError(f"{args.file} is not a JWK set")
    store, now = _open_keystore(args, create=True), _now()
    infos = store.import_public(args.partner, jwks, now=now)
    _print_keys(infos, now)
    for kid in kept_stored_validity(jwks, infos):
        print(f"note: key {kid} keeps its shorter stored validity: an import never lengthens "
              f"a known key (to use a key longer, {args.partner} rotates)", file=sys.stderr)
    return EXIT_OK


def _keys_rotate(args: argparse.Namespace) -> int:
    store, now = _open_keystore(args), _now()
    partners = [args.partner] if args.partner else [p for p in store.partners() if store.is_own(p)]
    if not partners:
        raise KeystoreError(f"keystore {store.path} holds no identity to rotate")
    for partner in partners:
        infos = store.rotate(partner, now=now, overlap=timedelta(days=args.overlap_days),
                             not_before=args.not_before, profile=args.profile,
                             rsa_bits=args.rsa_bits)
        _print_keys(infos, now)
        if args.not_before is None:
            # Partners verify with the public keys they imported: until they import the new
            # set, they reject what the new keys sign. Pre-staging avoids that gap.
            print(f"note: {partner}'s new keys sign from now on; partners need "
                  f"`kcbus keys export --partner {partner}` imported first "
                  "(use --not-before to pre-stage a rotation)", file=sys.stderr)
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    store, now = _open_keystore(args), _now()
    _print_keys([store.revoke(args.partner, args.kid, now=now, reason=args.reason)], now)
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    store, now = _open_keystore(args), _now()
    infos = store.keys(args.partner)
    if args.json:
        print(json.dumps([_key_json(i, now) for i in infos], indent=2))
    else:
        _print_keys(infos, now)
    return EXIT_OK


def _keys_prune(args: argparse.Namespace) -> int:
    keep: timedelta | None = timedelta(days=args.keep_private_days)
    if args.config is not None:
        keep = _ledger_keep(args.config)
    store, now = _open_keystore(args), _now()
    grace = timedelta(hours=args.max_age_hours) + DEFAULT_MAX_SKEW
    pruned = store.prune(now=now, partner=args.partner, grace=grace, keep_private=keep,
                         dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run,
                          "removed": [_pruned_json(k, now) for k in pruned]}, indent=2))
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for key in pruned:
        info = key.info
        print(f"{verb} {_pruned_parts(key):<19} {info.partner}  {info.use}  {info.kid}  "
              f"{info.status(now)} since {_time(_retired(info))}")
    if not pruned:
        print(f"nothing to prune in {store.path}")
    return EXIT_OK


def _ledger_keep(path: Path) -> timedelta | None:
    """How long a stored envelope may still be opened, by the bus configuration: the longest
    route retention (counted from a message's last change) plus a month for messages that
    wait unsettled; a route that keeps messages forever keeps their keys forever."""
    from kcbus.config import load

    periods = [route.retention for route in load(path).routes.values()]
    if None in periods:
        return None
    return max((p for p in periods if p is not None), default=timedelta(0)) + _UNSETTLED_MARGIN


def _retired(info: KeyInfo) -> datetime | None:
    moments = [when for when in (info.revoked_at, info.expires) if when is not None]
    return min(moments, default=None)


def _pruned_parts(key: PrunedKey) -> str:
    if key.private and key.public:
        return "private+public key"
    return "private key" if key.private else "public key"


def _pruned_json(key: PrunedKey, now: datetime) -> dict[str, object]:
    return {**_key_json(key.info, now), "private_removed": key.private,
            "public_removed": key.public}


def _new_passphrase() -> str:
    value = os.environ.get(NEW_PASSPHRASE_ENV)
    if value:
        return value
    if sys.stdin is None or not sys.stdin.isatty():
        raise KeystoreError(f"set ${NEW_PASSPHRASE_ENV} or run in a terminal to be asked")
    first = getpass.getpass("new keystore passphrase: ")
    if not first:
        raise KeystoreError("empty keystore passphrase")
    if getpass.getpass("new keystore passphrase again: ") != first:
        raise KeystoreError("the two new passphrases differ: nothing changed")
    return first


def _keys_passphrase(args: argparse.Namespace) -> int:
    store = _open_keystore(args)
    store.unlock()  # the current passphrase first: a wrong one should not cost the new prompt
    count = store.change_passphrase(_new_passphrase(), now=_now())
    print(f"re-encrypted {count} private keys of {store.path} under the new passphrase")
    return EXIT_OK


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _seal(args: argparse.Namespace) -> int:
    store, now = _open_keystore(args), _now()
    message = _read(args.message, "message")
    label: RoutingLabel | None = None
    if args.via is not None:
        # The label carries header facts only: read them with the hardened xoev parser.
        from xoev import parse_xml, read_header

        label = RoutingLabel.from_header(read_header(parse_xml(message)))
    media_type = args.media_type or mimetypes.guess_type(args.message.name)[0] or "application/xml"
    for path in args.attach:
        if not path.is_file():
            raise KeystoreError(f"attachment {path} is not a file")
    sealed = seal(message, sender=args.sender, recipient=args.recipient, keystore=store,
                  now=now, attachments=[Attachment(p) for p in args.attach],
                  media_type=media_type, via=args.via, label=label)
    try:
        size = sealed.save(args.output)
    except OSError as exc:
        raise KeystoreError(f"cannot write {args.output}: {exc.strerror}") from exc
    kind = "compact JWE" if sealed.is_compact else "container"
    print(f"sealed envelope {sealed.envelope_id} from {sealed.sender} for {sealed.recipient}"
          f"{'' if args.via is None else f' via {args.via}'}: {args.output} "
          f"({size} bytes, {kind}, {len(sealed.manifest)} attachments)")
    print(f"signing key     {sealed.signing_kid}")
    print(f"encryption key  {sealed.encryption_kid}")
    return EXIT_OK


def _message_name(media_type: str) -> str:
    if media_type in ("application/xml", "text/xml") or media_type.endswith("+xml"):
        return "message.xml"
    return "message" + (mimetypes.guess_extension(media_type) or ".bin")


def _open(args: argparse.Namespace) -> int:
    store, now = _open_keystore(args), _now()
    if not args.envelope.is_file():
        raise KeystoreError(f"no envelope at {args.envelope}")
    max_age = timedelta(hours=args.max_age_hours)
    if args.label:
        opened_label = open_label(args.envelope, keystore=store, now=now, replay_guard=None,
                                  max_age=max_age)
        facts = {
            "envelope_id": opened_label.envelope_id, "sender": opened_label.sender,
            "recipient": opened_label.recipient, "bus": opened_label.bus,
            "created": _time(opened_label.created), "signing_kid": opened_label.signing_kid,
            "encryption_kid": opened_label.encryption_kid,
            "content_sha256": opened_label.content_sha256,
            "attachments": opened_label.attachment_count, **opened_label.label.to_json(),
        }
        if args.json:
            print(json.dumps(facts, indent=2))
        else:
            for name, value in facts.items():
                print(f"{name:<15} {value}")
        return EXIT_OK
    if args.output is None:
        raise KeystoreError("pass -o DIR: the folder for the message and attachments")
    out: Path = args.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KeystoreError(f"{out} is not an empty folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        opened = open_envelope(args.envelope, keystore=store, now=now, replay_guard=None,
                               attachments_dir=out, max_age=max_age)
    except (EnvelopeRejected, KeystoreError):
        # Nothing of a rejected envelope is written; nor is the folder we made for it.
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    # The sender names its attachments; one may be called like the message file. The message
    # then takes the next free name (the report says which) instead of failing.
    target = out / _message_name(opened.media_type)
    for n in range(1, 1000):
        if not target.exists():
            break
        name = _message_name(opened.media_type)
        target = out / f"{Path(name).stem}-{n}{Path(name).suffix}"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(opened.message)
    report = {
        "envelope_id": opened.envelope_id, "created": _time(opened.created),
        "sender": opened.sender, "signing_kid": opened.signing_kid,
        "recipient": opened.recipient, "encryption_kid": opened.encryption_kid,
        "message": {"path": str(target), "media_type": opened.media_type,
                    "size": len(opened.message), "sha256": opened.message_sha256},
        "attachments": [
            {"path": str(a.path), "name": a.entry.name, "media_type": a.entry.media_type,
             "size": a.entry.size, "sha256": a.entry.sha256}
            for a in opened.attachments
        ],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"envelope        {opened.envelope_id}  created {_time(opened.created)}")
    print(f"sender          {opened.sender}  (signing key {opened.signing_kid})")
    print(f"recipient       {opened.recipient}  (encryption key {opened.encryption_kid})")
    print(f"message         {target}  {len(opened.message)} bytes  "
          f"sha256 {opened.message_sha256}")
    for item in opened.attachments:
        print(f"attachment      {item.path}  {item.entry.size} bytes  "
              f"sha256 {item.entry.sha256}  {item.entry.media_type}")
    return EXIT_OK
