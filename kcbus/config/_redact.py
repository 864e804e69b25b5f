"""Endpoint URLs without their secrets, for errors, logs and ``repr``.

An endpoint URL in the route config may carry credentials (``sftp://user:secret@host/in``,
``amqp://user:pw@broker//``, ``https://host/in?token=...``), usually expanded from ``${VAR}``.
Wherever kcbus shows such a URL to a person (an error text, a log line, a ``repr``) it goes
through :func:`redact_url` first.

Rules (RFC 3986 §3.2.1: the ``user:password`` form of userinfo is deprecated precisely because
it leaks): the password of the userinfo becomes ``***`` (the user name stays, it tells the
operator which account), and so does the value of every query parameter whose name looks like a
secret (``password``, ``passwd``, ``pwd``, ``token``, ``secret``, ``key``, ``auth``,
``credential``, ``signature``, ``sig``; any case, also inside longer names like
``access_token``). Everything else stays as written, so a redacted URL still says which endpoint
is meant. :func:`redact_urls` does the same for every URL inside a free text.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_url", "redact_urls", "url_has_secret"]

MASK = "***"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SECRET_NAME = re.compile(r"pass|pwd|token|secret|key|auth|credential|sig", re.IGNORECASE)
# scheme://[userinfo@]rest — userinfo ends at the last "@" before the path (RFC 3986 §3.2).
_AUTHORITY = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#]*)(?P<rest>.*)$", re.DOTALL
)


def _split(url: str) -> tuple[str, str | None, str | None, str, str] | None:
    """(scheme://, user, password, host[:port], path?query#fragment), or None if no URL."""
    match = _AUTHORITY.match(url)
    if match is None:
        return None
    scheme, authority, rest = match.group("scheme", "authority", "rest")
    if "@" not in authority and "@" in rest and _looks_like_cut_userinfo(authority):
        # An unencoded "/", "?" or "#" in a password ends the authority early for a parser;
        # err on the safe side and take everything up to the "@" as userinfo.
        cut = rest.index("@")
        authority = f"{authority}{rest[:cut]}@"
        tail = rest[cut + 1 :]
        end = min((i for i in (tail.find(c) for c in "/?#") if i >= 0), default=len(tail))
        authority, rest = authority + tail[:end], tail[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return scheme, None, None, authority, rest
    user, colon, password = userinfo.partition(":")
    return scheme, user, password if colon else None, hostport, rest


def _looks_like_cut_userinfo(authority: str) -> bool:
    """``user:pa`` (not ``host:5672`` or ``[::1]:5672``): a password cut short."""
    if authority.startswith("["):
        return False
    _, colon, after = authority.partition(":")
    return bool(colon) and not after.isdigit()


def _redact_query(rest: str) -> str:
    path, question, tail = rest.partition("?")
    if not question:
        return rest
    query, hash_, fragment = tail.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and _SECRET_NAME.search(name) else part)
    return f"{path}?{'&'.join(parts)}{hash_}{fragment}"


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``."""
    split = _split(url)
    if split is None:
        return url
    scheme, user, password, hostport, rest = split
    if user is None:
        userinfo = ""
    elif password is None:
        userinfo = f"{user}@"
    else:
        userinfo = f"{user}:{MASK}@"
    return f"{scheme}{userinfo}{hostport}{_redact_query(rest)}"


def redact_urls(text: str) -> str:
    """``text`` with every ``scheme://...`` in it redacted by :func:`redact_url`."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def url_has_secret(url: str) -> bool:
    """Whether :func:`redact_url` would hide anything in ``url`` (a password or a secret
    query parameter)."""
    return redact_url(url) != url
