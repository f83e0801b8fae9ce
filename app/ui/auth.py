"""Browser sign-in for the dashboard: the API key in an HttpOnly, SameSite=Strict cookie, and a
per-session CSRF token for every state-changing form.

- `POST /ui/sign-in` (form field `api_key`) checks the key like the API does and sets two cookies,
  both `HttpOnly; SameSite=Strict; Path=/ui` (and `Secure` when the request came over https):
  `ne_ui_key` (the key itself; it is never put in a URL) and `ne_ui_nonce` (32 random bytes drawn
  at sign-in).
- The CSRF token is HMAC-SHA256(key, "ui-csrf:" + nonce): a page embeds it, a POST sends it back
  as the form field `csrf_token` or the header `X-CSRF-Token`, and `check_csrf` compares it in
  constant time. A cross-site page has neither the cookies (SameSite=Strict) nor the token.
  POSTs whose `Origin` header names another host are refused as well.
- Pages need a signed-in owner (`UiOwner`); without one they redirect (303) to `/ui/`, the
  sign-in page. The JSON endpoints under `/ui/api/` answer 401 instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from app.deps import SessionDep
from app.errors import ProblemError
from core.keys import owner_for_key
from core.tables import Owner

KEY_COOKIE = "ne_ui_key"
NONCE_COOKIE = "ne_ui_nonce"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_KEY_CHARS = 200


class SignInRequired(Exception):
    """Raised by page dependencies without a valid session; the handler redirects to /ui/."""


@dataclass(frozen=True)
class UiSession:
    """The signed-in owner of a browser request and the CSRF token of its session."""

    owner: Owner
    csrf_token: str


def csrf_token_for(key: str, nonce: str) -> str:
    """The session's CSRF token (hex): HMAC-SHA256 keyed by the API key over the nonce."""
    return hmac.new(key.encode("utf-8"), b"ui-csrf:" + nonce.encode("ascii", "replace"),
                    hashlib.sha256).hexdigest()


def _session_of(request: Request, session: SessionDep) -> UiSession | None:
    key = request.cookies.get(KEY_COOKIE, "")
    nonce = request.cookies.get(NONCE_COOKIE, "")
    if not key or not nonce or len(key) > MAX_KEY_CHARS:
        return None
    owner = owner_for_key(session, key)
    if owner is None:
        return None
    return UiSession(owner, csrf_token_for(key, nonce))


def optional_session(request: Request, session: SessionDep) -> UiSession | None:
    """The browser session, or None when not signed in (the sign-in page)."""
    return _session_of(request, session)


def page_session(request: Request, session: SessionDep) -> UiSession:
    """The browser session of a page; redirects to the sign-in page without one."""
    found = _session_of(request, session)
    if found is None:
        raise SignInRequired()
    return found


def api_session(request: Request, session: SessionDep) -> UiSession:
    """The browser session of a JSON endpoint; 401 without one."""
    found = _session_of(request, session)
    if found is None:
        raise ProblemError(401, "Unauthorized", "sign in at /ui/ first")
    return found


OptionalSession = Annotated[UiSession | None, Depends(optional_session)]
UiSessionDep = Annotated[UiSession, Depends(page_session)]
UiApiSession = Annotated[UiSession, Depends(api_session)]


def same_origin(request: Request) -> bool:
    """False when the request carries an Origin header naming another host than its own."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc == request.headers.get("host", "")


def check_csrf(request: Request, ui: UiSession, submitted: str | None) -> None:
    """403 unless the request is same-origin and `submitted` (form field, else the header) is
    the session's token."""
    token = submitted or request.headers.get(CSRF_HEADER, "")
    if not same_origin(request):
        raise ProblemError(403, "Forbidden", "cross-origin request refused")
    if not token or not hmac.compare_digest(token.encode(), ui.csrf_token.encode()):
        raise ProblemError(403, "Forbidden", "missing or wrong CSRF token; reload the page")


def set_session_cookies(request: Request, response: Response, key: str) -> None:
    """Sign the browser in: the key and a fresh nonce, HttpOnly and SameSite=Strict."""
    secure = request.url.scheme == "https"
    for name, value in ((KEY_COOKIE, key), (NONCE_COOKIE, secrets.token_urlsafe(32))):
        response.set_cookie(name, value, max_age=SESSION_SECONDS, path=COOKIE_PATH,
                            httponly=True, samesite="strict", secure=secure)


def clear_session_cookies(request: Request, response: Response) -> None:
    secure = request.url.scheme == "https"
    for name in (KEY_COOKIE, NONCE_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict",
                               secure=secure)
