"""HTTP GET with retries, exponential backoff and body validation (standard library only).

Every attempt is one ``urllib`` request. An attempt fails on anything the network can do
to it: a transient HTTP status (408, 425, 429, 5xx), a refused or reset connection, a socket
timeout (a stalled server), a body shorter than its ``Content-Length``
(``http.client.IncompleteRead``), an empty body, a corrupt ``Content-Encoding: gzip``
body, or a body the caller's ``validate`` rejects (an HTML error page served with status
200, a file that does not parse). Failed attempts are retried after
``backoff_s * 2**k`` seconds (k = 0, 1, ...): exponential backoff, the schedule of
urllib3's ``Retry.backoff_factor``. A permanent status (404, 410, other 4xx) ends the
download at once: an obsolete or missing entry does not become available by asking again.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import time
import urllib.error
import urllib.request
import zlib
from typing import Callable

logger = logging.getLogger(__name__)

BACKOFF_S = 1.0  # first retry delay in seconds; doubles per attempt
USER_AGENT = "rna-predict-fetch/0.1"
TRANSIENT_STATUS = frozenset({408, 425, 429})  # and every 5xx


class DownloadError(ValueError):
    """A download that failed for good; ``reasons`` lists every failed attempt in order."""

    def __init__(self, message: str, reasons: list[str]):
        super().__init__(message)
        self.reasons = reasons


class InvalidBody(Exception):
    """Raised by a ``validate`` callback: the body is not what was asked for (retried)."""


def body_problem(data: bytes) -> str | None:
    """Why ``data`` (after transfer decoding) cannot be a structure file, or None.

    Empty bodies and HTML/XML pages (error pages of proxies and mirrors that answer
    with status 200) are rejected; anything else is left to the caller's parser.
    """
    if not data:
        return "empty body"
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            return f"corrupt gzip body ({exc})"
        if not data:
            return "empty body (after gunzip)"
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "HTML page instead of a structure file"
    return None


def _attempt(url: str, timeout_s: float) -> bytes:
    """One GET; the body with any ``Content-Encoding: gzip`` removed."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                               "Accept-Encoding": "gzip, identity"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        data = resp.read()
        encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidBody(f"corrupt gzip content encoding ({exc})") from None
    elif encoding not in ("", "identity"):
        raise InvalidBody(f"unsupported Content-Encoding {encoding!r}")
    return data


def download(url: str, timeout_s: float, retries: int,
             validate: Callable[[bytes], None] | None = None,
             backoff_s: float | None = None) -> tuple[bytes, list[str]]:
    """GET ``url``; return (body, reasons of the failed attempts before it succeeded).

    At most ``1 + retries`` attempts, ``timeout_s`` per blocking socket operation.
    ``validate(body)`` raises :class:`InvalidBody` to reject a body (the attempt
    counts as failed and is retried). ``backoff_s`` defaults to :data:`BACKOFF_S`.
    Raises :class:`DownloadError` (with every reason) when no attempt succeeded.
    """
    delay0 = BACKOFF_S if backoff_s is None else backoff_s
    reasons: list[str] = []
    for attempt in range(retries + 1):
        permanent = False
        try:
            data = _attempt(url, timeout_s)
            problem = body_problem(data)
            if problem:
                raise InvalidBody(f"{problem} ({len(data)} bytes)")
            if validate is not None:
                validate(data)
            return data, reasons
        except urllib.error.HTTPError as exc:
            permanent = exc.code not in TRANSIENT_STATUS and exc.code < 500
            reason = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:  # refused, DNS, timeout before the response
            reason = f"{type(exc.reason).__name__}: {exc.reason}"
        except http.client.IncompleteRead as exc:
            more = f", {exc.expected} more expected" if exc.expected else ""
            reason = f"body cut short: IncompleteRead ({len(exc.partial)} bytes read{more})"
        except (http.client.HTTPException, OSError) as exc:  # reset, timeout, bad status line
            reason = f"{type(exc).__name__}: {exc}"
        except InvalidBody as exc:
            reason = str(exc)
        reasons.append(reason)
        if permanent:
            raise DownloadError(f"{url}: {reason}", reasons)
        if attempt < retries:
            delay = delay0 * 2**attempt
            logger.warning("%s: %s; retry %d/%d in %.2fs", url, reason, attempt + 1, retries, delay)
            time.sleep(delay)
    raise DownloadError(f"{url}: failed after {retries + 1} attempts: {reasons[-1]}", reasons)


__all__ = ["BACKOFF_S", "DownloadError", "InvalidBody", "body_problem", "download"]
