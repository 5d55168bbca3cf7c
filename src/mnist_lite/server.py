"""The web page and HTTP API behind ``mnist-lite serve``: a fitted model reads digits drawn in a browser or uploaded.

Uploads are data from strangers: the body is bounded before it is read, images are bounded by their pixel count
before they are decoded (``images.decode_picture``), and only PNG, JPEG, BMP and TIFF decoders run. Every image
goes through ``images.to_mnist``, the preprocessing ``mnist-lite predict`` uses, so both give the same answer.
"""

import base64
import binascii
import io
import json
import logging
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.types import Message

from mnist_lite import checkpoints
from mnist_lite.images import TooManyPixels, decode_picture, to_mnist
from mnist_lite.network import Classifier

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_FILES = 16  # images per request
PAGE = files("mnist_lite") / "page"
# The page may load nothing from elsewhere: no CDN, no fonts, no scripts but its own.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}
USAGE = 'send an image as a multipart field named \'file\', or JSON {"image": "data:image/png;base64,..."}'

# Where `mnist-lite serve` puts its settings for from_environment: its worker processes start afresh.
CKPT_ENV, MAX_UPLOAD_ENV = "MNIST_LITE_SERVE_CKPT", "MNIST_LITE_SERVE_MAX_UPLOAD"

log = logging.getLogger("mnist_lite.serve")


class Refused(Exception):
    """A request this API answers with a 4xx and a JSON ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(model: Classifier, checkpoint_name: str, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The ASGI app around one fitted model in eval mode (``checkpoints.load_model``)."""
    app = FastAPI(title="mnist-lite", docs_url=None, redoc_url=None, openapi_url=None)  # the docs pages use a CDN
    page = (PAGE / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")
    parameters = sum(p.numel() for p in model.parameters())

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": True, "checkpoint": checkpoint_name, "parameters": parameters}

    # async and computed in place: one image costs about a millisecond, less than handing it to a thread would.
    @app.post("/predict")
    async def predict(request: Request) -> Response:
        try:
            pictures, several = await _pictures(request, max_upload_bytes)
            answers = read_digits(model, pictures)
        except Refused as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except Exception:
            log.exception("POST /predict failed")
            return JSONResponse({"error": "internal error; the server's log has the details."}, status_code=500)
        return JSONResponse(answers if several else answers[0])

    return app


def from_environment() -> FastAPI:
    """The app for the checkpoint named in the environment, read through the same safe path as every command."""
    path = Path(os.environ[CKPT_ENV])
    torch.set_num_threads(1)  # one 28x28 image at a time: more threads only add hand-over cost
    model = checkpoints.load_model(path)
    return create_app(model, path.name, int(os.environ.get(MAX_UPLOAD_ENV, MAX_UPLOAD_BYTES)))


def read_digits(model: Classifier, pictures: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Each picture made MNIST-like, then one batch through the model: prediction, probabilities, preview."""
    digits = []
    for name, data in pictures:
        try:
            digits.append(to_mnist(decode_picture(io.BytesIO(data))))
        except TooManyPixels as e:
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
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _from_data_url(body: bytes) -> bytes:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refused(400, f"the body is not valid JSON ({e}): {USAGE}.") from None
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
    async def replay() -> Message:  # Starlette's form parser reads the body already read and bounded above
        return {"type": "http.request", "body": body, "more_body": False}

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
