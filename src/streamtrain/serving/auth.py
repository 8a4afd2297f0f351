"""Bearer-token authentication of every route but ``/healthz``, as ASGI middleware.

What each request needs: ``GET``/``HEAD`` a ``read`` or ``full`` token, any other method a
``full`` one (so a route added later is closed to read tokens by default). The token comes in
``Authorization: Bearer <token>``; a browser, which cannot put a header on the dashboard's
event stream, signs in once at the login page that ``GET /`` shows without a token, and then
sends the token back in an ``HttpOnly``, ``SameSite=Strict`` cookie. The cookie counts only for
``GET``/``HEAD``: writes always need the header, so no other site can make a browser predict or
post labels (no cross-site request forgery).

Refusals follow RFC 6750: 401 with ``WWW-Authenticate: Bearer`` when no valid token came, 403
(``insufficient_scope``) for a read token on a write; the body is the app's usual
``{"error", "reason"}``. Nothing here logs, and no answer echoes what was presented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, RedirectResponse, Response

from streamtrain.serving.responses import json_response
from streamtrain.serving.tokens import Role, TokenSet

__all__ = ["COOKIE", "OPEN_PATHS", "BearerAuth", "document_bearer"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "streamtrain_token"
OPEN_PATHS = frozenset({"/healthz"})
LOGIN_PATH = "/login"
_READ_METHODS = frozenset({"GET", "HEAD"})
_MAX_LOGIN_BODY = 4096
_LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamtrain · sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}
input{{font:inherit;width:100%;box-sizing:border-box;margin:.5rem 0;padding:.4rem}}
.bad{{color:#b00020}}</style></head>
<body><h1>streamtrain</h1>
<p>This server asks for a token (a line of its <code>--token-file</code>, read or full).</p>
{message}<form method="post" action="login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="submit" value="Open the dashboard"></form></body></html>
"""


class BearerAuth:
    """Let a request through to ``app`` only with a token whose role allows it.

    ``secure_cookie`` marks the dashboard's cookie ``Secure`` (when serving HTTPS).
    """

    def __init__(self, app: ASGIApp, tokens: TokenSet, secure_cookie: bool = False) -> None:
        self.app = app
        self.tokens = tokens
        self.secure_cookie = secure_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if scope["path"] == LOGIN_PATH and method == "POST":
            await _Login(self.tokens, self.secure_cookie)(scope, receive, send)
            return
        needed = Role.READ if method in _READ_METHODS else Role.FULL
        refusal = self.check(_headers(scope), needed)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/" and method in _READ_METHODS and refusal.status_code == 401:
            # A browser at the dashboard: offer to sign in, with the same challenge.
            challenge = refusal.headers["www-authenticate"]
            refusal = _login_page(401, "")
            refusal.headers["WWW-Authenticate"] = challenge
        await refusal(scope, receive, send)

    def check(self, headers: dict[str, str], needed: Role) -> Response | None:
        """None when ``headers`` carry a token allowing ``needed``, else the refusal."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                return _unauthorized(
                    "invalid_request",
                    "bad-authorization",
                    "expected 'Authorization: Bearer <token>'",
                )
            role = self.tokens.role_of(credentials.strip())
        elif needed is Role.READ and (cookie := _cookie(headers)) is not None:
            role = self.tokens.role_of(cookie)
        else:
            return _unauthorized(None, "unauthenticated", "this server needs a bearer token")
        if role is None:
            return _unauthorized("invalid_token", "bad-token", "the token is not valid here")
        if not role.allows(needed):
            return _forbidden()
        return None


def document_bearer(app: FastAPI) -> None:
    """Say in ``app``'s OpenAPI document that its routes, but the open ones, need a token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # built once and cached by FastAPI; the changes below are idempotent
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        schema["security"] = [{"bearer": []}]
        for path in OPEN_PATHS:
            for operation in schema.get("paths", {}).get(path, {}).values():
                operation["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class _Login:
    """``POST /login`` from the login page's form: the cookie and back to the dashboard."""

    def __init__(self, tokens: TokenSet, secure: bool) -> None:
        self.tokens = tokens
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_small_body(receive, _MAX_LOGIN_BODY)
        fields = parse_qs(body.decode("utf-8", "replace")) if body is not None else {}
        token = (fields.get("token") or [""])[0].strip()
        if not token or self.tokens.role_of(token) is None:
            response: Response = _login_page(401, '<p class="bad">That token is not valid.</p>')
        else:
            # Relative: "/" behind no proxy, the dashboard's own path behind one that adds a prefix.
            response = RedirectResponse("./", status_code=303)
            response.set_cookie(
                COOKIE, token, httponly=True, samesite="strict", secure=self.secure, path="/"
            )
        await response(scope, receive, send)


async def _read_small_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it runs over ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _cookie(headers: dict[str, str]) -> str | None:
    return cookie_parser(headers.get("cookie", "")).get(COOKIE)


def _unauthorized(error: str | None, reason: str, message: str) -> Response:
    challenge = 'Bearer realm="streamtrain"' + (f', error="{error}"' if error else "")
    response = json_response({"error": message, "reason": reason}, 401)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _forbidden() -> Response:
    response = json_response(
        {
            "error": "a read-only token may look but not predict or post labels",
            "reason": "read-only-token",
        },
        403,
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="streamtrain", error="insufficient_scope"'
    return response


def _login_page(status: int, message: str) -> Response:
    return HTMLResponse(
        _LOGIN_PAGE.format(message=message),
        status_code=status,
        headers={
            "WWW-Authenticate": 'Bearer realm="streamtrain"',
            "Content-Security-Policy": _LOGIN_CSP,
            "Cache-Control": "no-store",
        },
    )
