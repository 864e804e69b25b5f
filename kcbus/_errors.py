"""Errors of the bus runtime, all below :mod:`xoev._errors`' tree.

    KcbusError
    ├── PartnerFault                     → REJECTED + Rückweisung with ``reason_code``
    │   ├── UnknownSender                sender-unknown
    │   ├── SenderMismatch               sender-mismatch (XÖV autor ≠ signing partner)
    │   ├── NoRoute                      no-route
    │   ├── TypeNotAllowed               type-not-allowed
    │   ├── UnknownReader                unknown-reader
    │   ├── TestToProduction             test-to-production
    │   ├── DuplicateMessage             duplicate (status DUPLICATE, not REJECTED)
    │   ├── InspectionMismatch           inspection-mismatch (sealing ≠ route's mode)
    │   ├── SchemaInvalid                schema-invalid (carries line + XPath)
    │   └── CodeInvalid                  code-invalid (carries line + XPath)
    ├── TransientFault
    │   └── LedgerUnavailable            the database is down or busy
    ├── ConfigurationError
    │   ├── ConfigError                  a config file is wrong: file, line, field
    │   ├── ContentKeyMissing            an at-rest key ID is not in the key ring
    │   ├── ReceiptInvalid               a receipt kcbus built fails kcbus's own XSD (a bug)
    │   └── LedgerError                  backup/restore/migration refused
    └── NotFound                         an operator asked for a message that is not there

Texts carry IDs, codes, partners, file names, lines, never message content.
"""

from __future__ import annotations

from pathlib import Path

from xoev import ConfigurationError, KcbusError, PartnerFault, TransientFault

__all__ = [
    "CodeInvalid",
    "ConfigError",
    "ContentKeyMissing",
    "DuplicateMessage",
    "InspectionMismatch",
    "LedgerError",
    "LedgerUnavailable",
    "NoRoute",
    "NotFound",
    "ReceiptInvalid",
    "SchemaInvalid",
    "SenderMismatch",
    "TestToProduction",
    "TypeNotAllowed",
    "UnknownReader",
    "UnknownSender",
]


class ConfigError(ConfigurationError):
    """A partner/route config file is wrong. ``str()`` is ``FILE:LINE: FIELD: problem``."""

    def __init__(self, file: Path | str, line: int | None, field: str, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.problem = problem
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class ContentKeyMissing(ConfigurationError):
    """Content encrypted under ``key_id`` cannot be read: the key is not in the key ring."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"ledger content key {key_id!r} is not in the key ring")


class ReceiptInvalid(ConfigurationError):
    """A receipt kcbus built does not validate against kcbus's own schema: never sent."""

    def __init__(self, receipt_type: str, line: int | None, path: str, problem: str) -> None:
        self.receipt_type = receipt_type
        self.line = line
        self.path = path
        super().__init__(f"receipt {receipt_type} fails its schema, line {line}: {path}: {problem}")


class LedgerError(ConfigurationError):
    """The ledger refuses an operation (wrong backup file, newer schema, ...)."""


class LedgerUnavailable(TransientFault):
    """The ledger database cannot be reached or is busy; a retry may help."""


class NotFound(KcbusError):
    """No message in the ledger has that reference."""

    reason_code = "not-found"

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no message {ref} in the ledger")


class _Rejection(PartnerFault):
    """Base of the bus's own rejection reasons; each is a code in the kcbus code list."""


class UnknownSender(_Rejection):
    reason_code = "sender-unknown"

    def __init__(self, sender: str | None) -> None:
        self.sender = sender
        super().__init__(f"sender {sender!r} is not a registered partner")


class SenderMismatch(_Rejection):
    reason_code = "sender-mismatch"

    def __init__(self, sender: str, detail: str) -> None:
        self.sender = sender
        super().__init__(f"sender {sender}: {detail}")


class NoRoute(_Rejection):
    reason_code = "no-route"

    def __init__(self, sender: str, message_type: str | None) -> None:
        self.sender = sender
        self.message_type = message_type
        super().__init__(f"no route for message type {message_type} from {sender}")


class TypeNotAllowed(_Rejection):
    reason_code = "type-not-allowed"

    def __init__(self, sender: str, message_type: str | None, route: str) -> None:
        self.sender = sender
        self.message_type = message_type
        self.route = route
        super().__init__(f"partner {sender} may not send {message_type} (route {route})")


class UnknownReader(_Rejection):
    reason_code = "unknown-reader"

    def __init__(self, verzeichnisdienst: str | None, kennung: str) -> None:
        self.verzeichnisdienst = verzeichnisdienst
        self.kennung = kennung
        super().__init__(f"reader {verzeichnisdienst}:{kennung} is not a registered partner")


class TestToProduction(_Rejection):
    # XÖV basisnachricht g2g 1.1, attribute ``test``: a test message "darf nicht im normalen
    # Produktivbetrieb verarbeitet werden".
    reason_code = "test-to-production"
    __test__ = False  # not a pytest test class

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        super().__init__(f"test message may not reach production recipient {recipient}")


class DuplicateMessage(_Rejection):
    reason_code = "duplicate"

    def __init__(self, message_uuid: str, original_id: int) -> None:
        self.message_uuid = message_uuid
        self.original_id = original_id
        super().__init__(f"message {message_uuid} was already received (ledger #{original_id})")


class SchemaInvalid(_Rejection):
    reason_code = "schema-invalid"

    def __init__(self, message: str, *, line: int | None = None, xpath: str | None = None) -> None:
        self.line = line
        self.xpath = xpath
        super().__init__(message)


class InspectionMismatch(_Rejection):
    reason_code = "inspection-mismatch"

    def __init__(self, route: str, inspection: str) -> None:
        self.route = route
        self.inspection = inspection
        sealed = "with a routing label" if inspection == "full" else "for the bus"
        super().__init__(f"route {route} is {inspection}, but the envelope is sealed {sealed}")


class CodeInvalid(_Rejection):
    reason_code = "code-invalid"

    def __init__(self, message: str, *, line: int | None = None, xpath: str | None = None) -> None:
        self.line = line
        self.xpath = xpath
        super().__init__(message)
