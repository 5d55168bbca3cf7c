"""The web page and HTTP API behind ``mnist-lite serve``: a fitted model reads digits drawn in a browser or uploaded.

Uploads are data from strangers: the body is bounded in size and time before it is read, and images are decoded
(PNG, JPEG, BMP and TIFF only) in a worker process whose time and memory the kernel bounds (``decoding.py``),
waited for in a thread, so the event loop (and ``/health``) always answers. Requests are answered only
for a loopback name, an IP address or a host the operator allowed, and POSTs only from the page's own origin or
an allowed one: a web page elsewhere cannot use the API, by a cross-origin form or by DNS rebinding. Every image
goes through ``images.to_mnist``, the preprocessing ``mnist-lite predict`` uses, so both give the same answer.
"""

import asyncio
import base64
import binascii
import functools
import io
import ipaddress
import json
import logging
import os
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import h11
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnist_lite.boundaries import checkpoints, decoding
from mnist_lite.boundaries.decoding import TooCostly
from mnist_lite.boundaries.images import as_tensor, to_mnist
from mnist_lite.network import Classifier

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_FILES = 16  # images per request
REPLAY_CHUNK = 256 * 1024
HEADER_TIMEOUT_S = 10  # a request's headers must arrive within this (slowloris)
BODY_TIMEOUT_S = 30  # the whole body must arrive within this; a slow upload ties up nothing longer
LOOPBACK_NAMES = {"localhost"}
PAGE = files("mnist_lite.serving") / "page"
# The page may load nothing from elsewhere: no CDN, no fonts, no scripts but its own.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}
USAGE = 'send an image as a multipart field named \'file\', or JSON {"image": "data:image/png;base64,..."}'

# Where `mnist-lite serve` puts its settings for from_environment: its worker processes start afresh.
CKPT_ENV, MAX_UPLOAD_ENV, HOSTS_ENV = "MNIST_LITE_SERVE_CKPT", "MNIST_LITE_SERVE_MAX_UPLOAD", "MNIST_LITE_SERVE_HOSTS"

log = logging.getLogger("mnist_lite.serve")


class Refused(Exception):
    """A request this API answers with a 4xx and a JSON ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(
    model: Classifier,
    checkpoint_name: str,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: Iterable[str] = (),
) -> FastAPI:
    """The ASGI app around one fitted model in eval mode (``checkpoints.load_model``). ``allowed_hosts``: host
    names answered beside loopback names and IP addresses (``*`` for any), and origins allowed to POST."""
    app = FastAPI(title="mnist-lite", docs_url=None, redoc_url=None, openapi_url=None)  # the docs pages use a CDN
    page = (PAGE / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")
    app.add_middleware(HostAndOrigin, allowed=frozenset(h.lower() for h in allowed_hosts))
    parameters = sum(p.numel() for p in model.parameters())
    one_at_a_time = anyio.CapacityLimiter(1)  # decoding and the model are CPU-bound: more threads only contend

    @app.exception_handler(HTTPException)
    async def as_error(request: Request, e: HTTPException) -> JSONResponse:  # 404, 405: {"error": ...} too
        return JSONResponse({"error": f"{e.detail}: {request.method} {request.url.path}"}, status_code=e.status_code)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": True, "checkpoint": checkpoint_name, "parameters": parameters}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        try:
            pictures, several = await _pictures(request, max_upload_bytes)
            answers = await anyio.to_thread.run_sync(
                functools.partial(read_digits, model, pictures), limiter=one_at_a_time
            )
        except Refused as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except Exception:
            log.exception("POST /predict failed")
            return JSONResponse({"error": "internal error; the server's log has the details."}, status_code=500)
        return JSONResponse(answers if several else answers[0])

    return app


class HostAndOrigin:
    """Answers a request only for a loopback name, an IP address or an allowed host (a page that reaches this
    server through a DNS name it rebound to this machine sends that name), and takes a POST only from this
    server's own origin or an allowed one (a page elsewhere may still send a form cross-origin)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        refusal = None
        if not self._allowed(_hostname(host)):
            refusal = (
                400,
                f"host {host!r} is not served here: use 127.0.0.1 or the address, or serve --allowed_hosts.",
            )
        elif scope["method"] not in ("GET", "HEAD", "OPTIONS") and "origin" in headers:
            origin = headers["origin"]
            try:
                parts = urlsplit(origin)
                same, name = parts.netloc.lower() == host.lower(), parts.hostname or ""
            except ValueError:  # "http://[": an unclosed IPv6 bracket
                refusal = (400, f"the origin {origin!r} is not a URL.")
            else:
                if not same and not self._allowed(name, names_only=True):
                    refusal = (403, f"requests from {origin!r} are not accepted: only this server's own page may post.")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"error": refusal[1]}, status_code=refusal[0])(scope, receive, send)

    def _allowed(self, name: str, names_only: bool = False) -> bool:
        if "*" in self.allowed or name in self.allowed:
            return True
        if names_only:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in LOOPBACK_NAMES


def _hostname(host: str) -> str:
    """The name in a Host header, without its port (an IPv6 address comes in brackets); "" for none or a malformed
    one ("[", "[::1"), which no name is allowed to be."""
    try:
        return (urlsplit(f"//{host}").hostname or "") if host else ""
    except ValueError:
        return ""


class HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers: a client that connects and sends
    nothing, or half a header, is closed after HEADER_TIMEOUT_S instead of holding its place forever. (uvicorn's
    own timeout runs only between the requests of a kept-alive connection.)"""

    deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.deadline is not None and self.conn.their_state is not h11.IDLE:  # the headers are in
            self.deadline.cancel()
            self.deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._start_deadline()  # for the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        super().connection_lost(exc)

    def _start_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

    def _too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def from_environment() -> FastAPI:
    """The app for the checkpoint named in the environment, read through the same safe path as every command."""
    path = Path(os.environ[CKPT_ENV])
    torch.set_num_threads(1)  # one 28x28 image at a time: more threads only add hand-over cost
    model = checkpoints.load_model(path)
    hosts = json.loads(os.environ.get(HOSTS_ENV, "[]"))
    return create_app(model, path.name, int(os.environ.get(MAX_UPLOAD_ENV, MAX_UPLOAD_BYTES)), hosts)


def read_digits(model: Classifier, pictures: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Each picture made MNIST-like, then one batch through the model: prediction, probabilities, preview."""
    digits = []
    for (name, _), pixels in zip(pictures, list(decoding.decode(data for _, data in pictures))):
        try:
            digits.append(to_mnist(as_tensor(pixels)))
        except TooCostly as e:
            raise Refused(413, f"{name}: {e}.") from None
        except ValueError as e:
            raise Refused(422, f"{name}: {e}.") from None
    batch = torch.stack(digits)
    with torch.inference_mode():
        probabilities = model(batch[:, None].float() / 255).softmax(dim=1)
    confidence, prediction = probabilities.max(dim=1)
    return [
        {
            "prediction": int(p),
            "confidence": float(c),
            "probabilities": probs.tolist(),
            "preview": _png_data_url(digit),
        }
        for p, c, probs, digit in zip(prediction, confidence, probabilities, digits)
    ]


async def _pictures(request: Request, limit: int) -> tuple[list[tuple[str, bytes]], bool]:
    """The request's images as (name, bytes), and whether it sent several (which are answered with a list)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json"):
        raise Refused(415, f"content type {kind or 'none'} is not accepted: {USAGE}.")
    body = await _body(request, limit)
    if not body:
        raise Refused(400, f"the request body is empty: {USAGE}.")
    if kind == "application/json":
        return [("image", _from_data_url(body))], False
    return await _from_multipart(request, body)


async def _body(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 as soon as it is declared or seen to be over ``limit`` bytes."""
    too_large = Refused(413, f"the upload is over the {limit:,}-byte limit: send a smaller image.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise Refused(408, f"the upload took more than {BODY_TIMEOUT_S} s: send it again.") from None
    return bytes(body)


def _from_data_url(body: bytes) -> bytes:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as e:  # malformed, nested too deep, an integer of thousands of digits
        raise Refused(400, f"the body is not JSON this API reads ({str(e)[:100]}): {USAGE}.") from None
    image = message.get("image") if isinstance(message, dict) else None
    if not isinstance(image, str):
        raise Refused(422, f"the JSON has no string field 'image': {USAGE}.")
    header, comma, payload = image.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise Refused(422, "'image' must be a base64 data URL, as canvas.toDataURL() gives: data:image/png;base64,...")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(422, "'image' is not valid base64 after 'data:...;base64,'.") from None


async def _from_multipart(request: Request, body: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    chunks = [body[i : i + REPLAY_CHUNK] for i in range(0, len(body), REPLAY_CHUNK)]

    async def replay() -> Message:  # Starlette's form parser reads the body already read and bounded above,
        await asyncio.sleep(0)  # a chunk at a time, so that the event loop answers others (/health) between them
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    try:
        form = await Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except Exception as e:  # Starlette reports a malformed body or too many parts as HTTPException or its own error
        raise Refused(400, f"the multipart body cannot be read ({getattr(e, 'detail', e)}).") from None
    uploads = form.getlist("file")
    if not uploads:
        fields = ", ".join(repr(key) for key in form) or "none"
        raise Refused(422, f"no field named 'file' (fields sent: {fields}): {USAGE}.")
    pictures = []
    for upload in uploads:
        if not isinstance(upload, UploadFile):
            raise Refused(422, "the field 'file' must be a file upload, not text.")
        pictures.append((upload.filename or "file", await upload.read()))
    return pictures, len(pictures) > 1


def _png_data_url(digit: torch.Tensor) -> str:
    buffer = io.BytesIO()
    Image.fromarray(digit.numpy()).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
