"""adapters.envelope — sealed envelopes: sign, then encrypt, with JOSE (RFC 7515 in RFC 7516).

The public face:

* :func:`seal` — sign with the sender's key, encrypt for the recipient; with attachments
  (streamed in authenticated chunks) and, in end-to-end mode, a routing label for the bus.
  Gives a :class:`SealedEnvelope` to write or stream.
* :func:`open_envelope` — decrypt and verify everything (signature, recipient, time window,
  replay, every attachment chunk and digest) or raise one typed :class:`EnvelopeRejected`.
* :func:`open_label` / :func:`forward_content` — the bus's side of end-to-end mode: verify the
  sender from the routing label, pass the content on unread.
* :func:`peek_envelope` — the envelope ID without keys, for deduplication.
* :class:`Keystore` — our identities and partners' public keys; rotation, revocation,
  pruning, passphrase change; :func:`passphrase_from_environment` (env, file, prompt).
* :class:`ReplayGuard` — the protocol the ledger implements; :class:`InMemoryReplayGuard`.

Wire format: see ``_seal`` (JWS/JWE headers), ``_container`` (the file holding label, content
and attachments) and ``_stream`` (attachment chunks). Profiles: see ``_keys``.
"""

from __future__ import annotations

from adapters.envelope._container import EnvelopeSource
from adapters.envelope._errors import (
    EnvelopeRejected,
    Expired,
    KeyConflict,
    KeystoreError,
    Malformed,
    NoSuchPartner,
    NoUsableKey,
    Replayed,
    RevokedKey,
    Tampered,
    Truncated,
    UnknownSenderKey,
    UnsupportedAlgorithm,
    WrongPassphrase,
    WrongRecipient,
)
from adapters.envelope._forward import forward_content
from adapters.envelope._keys import (
    DEFAULT_KEEP_PRIVATE,
    DEFAULT_OVERLAP,
    DEFAULT_PRUNE_GRACE,
    DEFAULT_VALIDITY,
    PROFILES,
    KeyInfo,
    Profile,
)
from adapters.envelope._keystore import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    Keystore,
    PassphraseSource,
    PrunedKey,
    passphrase_from_environment,
    read_passphrase_file,
)
from adapters.envelope._keystore_import import kept_stored_validity
from adapters.envelope._model import (
    Attachment,
    ManifestEntry,
    OpenedAttachment,
    OpenedEnvelope,
    OpenedLabel,
    RoutingLabel,
)
from adapters.envelope._open import EnvelopeInfo, open_envelope, open_label, peek_envelope
from adapters.envelope._replay import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_SKEW,
    InMemoryReplayGuard,
    ReplayGuard,
)
from adapters.envelope._seal import SealedEnvelope, seal
from adapters.envelope._stream import CHUNK_SIZE, AttachmentChanged

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_KEEP_PRIVATE",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_SKEW",
    "DEFAULT_OVERLAP",
    "DEFAULT_PRUNE_GRACE",
    "DEFAULT_VALIDITY",
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "PROFILES",
    "Attachment",
    "AttachmentChanged",
    "EnvelopeInfo",
    "EnvelopeRejected",
    "EnvelopeSource",
    "Expired",
    "InMemoryReplayGuard",
    "KeyConflict",
    "KeyInfo",
    "Keystore",
    "KeystoreError",
    "Malformed",
    "ManifestEntry",
    "NoSuchPartner",
    "NoUsableKey",
    "OpenedAttachment",
    "OpenedEnvelope",
    "OpenedLabel",
    "PassphraseSource",
    "Profile",
    "PrunedKey",
    "ReplayGuard",
    "Replayed",
    "RevokedKey",
    "RoutingLabel",
    "SealedEnvelope",
    "Tampered",
    "Truncated",
    "UnknownSenderKey",
    "UnsupportedAlgorithm",
    "WrongPassphrase",
    "WrongRecipient",
    "forward_content",
    "kept_stored_validity",
    "open_envelope",
    "open_label",
    "passphrase_from_environment",
    "peek_envelope",
    "read_passphrase_file",
    "seal",
]
