"""The ASGI middlewares a request passes before the app reads it: who may ask, and how large and slow a body may be.
Each refusal is a JSON ``{"error": ...}`` that says what to do, as the app's own are."""

import asyncio
import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_lite.serving.bodies import Refused

BODY_TIMEOUT_S = 30  # the whole body must arrive within this; a slow upload ties up nothing longer
LOOPBACK_NAMES = {"localhost"}


class HostAndOrigin:
    """Answers only a Host that is a loopback name, an IP address or an allowed name (a page whose DNS name was
    rebound to this machine sends its own), and a POST only from this server's page or an allowed origin (another
    site's page may still post a form). Not Starlette's TrustedHostMiddleware: it refuses an address typed in, and
    in plain text."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(scope["method"], Headers(scope=scope)) if scope["type"] == "http" else None
        await (refusal.response() if refusal else self.app)(scope, receive, send)

    def refusal(self, method: str, headers: Headers) -> Refused | None:
        host, origin = headers.get("host", ""), headers.get("origin")
        try:
            answered = self.answers(urlsplit(f"//{host}").hostname, addresses=True)
        except ValueError:  # "[" or "[::1": an unclosed IPv6 bracket
            answered = False
        if not answered:
            message = f"host {host!r} is not served here: use 127.0.0.1 or the address, or serve --allowed_hosts."
            return Refused(400, message)
        if method in ("GET", "HEAD", "OPTIONS") or origin is None:
            return None
        try:
            parts = urlsplit(origin)
        except ValueError:
            return Refused(400, f"the origin {origin!r} is not a URL.")
        if parts.netloc.lower() == host.lower() or self.answers(parts.hostname, addresses=False):
            return None
        return Refused(403, f"requests from {origin!r} are not accepted: only this server's own page may post.")

    def answers(self, name: str | None, addresses: bool) -> bool:
        """Whether requests for ``name`` are answered; with ``addresses``, any loopback name or IP address too."""
        if "*" in self.allowed or name in self.allowed:
            return True
        if name is None or not addresses:
            return False
        try:
            return bool(ipaddress.ip_address(name))
        except ValueError:
            return name in LOOPBACK_NAMES


class BoundedBody:
    """Refuses a body over ``limit`` bytes from its declared length, or as soon as it passes it (a chunked body
    declares none), and one that takes more than BODY_TIMEOUT_S to arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = Refused(413, f"the upload is over the {self.limit:,}-byte limit: send a smaller image.")
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await too_large.response()(scope, receive, send)
        deadline, received, more = asyncio.get_running_loop().time() + BODY_TIMEOUT_S, 0, True

        async def bounded() -> Message:  # raises into the app's reader, whose exception handler answers
            nonlocal received, more
            if not more:  # the body is in: what comes now is the client going away
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise Refused(408, f"the upload took more than {BODY_TIMEOUT_S} s: send it again.") from None
            received, more = received + len(message.get("body", b"")), message.get("more_body", False)
            if received > self.limit:
                raise too_large
            return message

        await self.app(scope, bounded, send)
