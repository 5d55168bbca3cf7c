"""The page and HTTP API of ``mnist-lite serve``: a fitted model reads digits drawn in a browser or uploaded, through
``images.to_mnist`` as ``mnist-lite predict`` reads them. Requests pass ``guards.py``; ``bodies.py`` reads them."""

import base64
import functools
import io
import json
import logging
import os
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mnist_lite.boundaries import checkpoints, decoding
from mnist_lite.boundaries.images import as_tensor, to_mnist
from mnist_lite.network import Classifier
from mnist_lite.serving.bodies import MAX_UPLOAD_BYTES, Refused, pictures
from mnist_lite.serving.guards import BoundedBody, HostAndOrigin

PAGE = files("mnist_lite.serving") / "page"
# The page may load nothing from elsewhere: no CDN, no fonts, no scripts but its own.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}
SETTINGS_ENV = "MNIST_LITE_SERVE"  # JSON from `mnist-lite serve` for from_environment: uvicorn's workers start afresh

log = logging.getLogger("mnist_lite.serve")


def create_app(
    model: Classifier, checkpoint_name: str, max_upload_bytes: int = MAX_UPLOAD_BYTES, allowed_hosts: Iterable[str] = ()
) -> FastAPI:
    """The ASGI app around one fitted model in eval mode (``checkpoints.load_model``). ``allowed_hosts``: host
    names answered beside loopback names and IP addresses (``*`` for any), and origins allowed to POST."""
    app = FastAPI(title="mnist-lite", docs_url=None, redoc_url=None, openapi_url=None)  # the docs pages use a CDN
    page = (PAGE / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")
    app.add_middleware(BoundedBody, limit=max_upload_bytes)
    app.add_middleware(HostAndOrigin, allowed=frozenset(h.lower() for h in allowed_hosts))  # the outer one
    parameters = sum(p.numel() for p in model.parameters())
    one_at_a_time = anyio.CapacityLimiter(1)  # decoding and the model are CPU-bound: more threads only contend

    @app.exception_handler(HTTPException)
    async def as_error(request: Request, e: HTTPException) -> JSONResponse:  # Starlette's 404 and 405 too
        if isinstance(e, Refused):
            return e.response()
        return Refused(e.status_code, f"{e.detail}: {request.method} {request.url.path}").response()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": True, "checkpoint": checkpoint_name, "parameters": parameters}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        try:
            sent, several = await pictures(request)
        except ClientDisconnect:  # it left before its body arrived: nobody to answer, and no error of ours to log
            return Response(status_code=400)
        try:
            answers = await anyio.to_thread.run_sync(functools.partial(read_digits, model, sent), limiter=one_at_a_time)
            return JSONResponse(answers if several else answers[0])  # NaN from a model that overflows: not JSON
        except Refused:
            raise
        except Exception:
            log.exception("POST /predict failed")
            return JSONResponse({"error": "internal error; the server's log has the details."}, status_code=500)

    return app


# The model serve's command read and checked, served as it is when uvicorn runs the app in the command's process.
CHECKED: dict[Path, Classifier] = {}


def from_environment() -> FastAPI:
    """The app for the settings in SETTINGS_ENV, its checkpoint read through the same safe path as every command."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    path = Path(settings["ckpt_path"])
    model = CHECKED.pop(path) if path in CHECKED else checkpoints.load_model(path)  # a worker process reads it
    torch.set_num_threads(1)  # one 28x28 image at a time: more threads only add hand-over cost
    return create_app(model, path.name, settings["max_upload_bytes"], settings["allowed_hosts"])


def read_digits(model: Classifier, sent: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Each picture made MNIST-like, then one batch through the model: prediction, probabilities, preview."""
    digits = []
    for (name, _), pixels in zip(sent, list(decoding.decode(data for _, data in sent))):
        try:
            digits.append(to_mnist(as_tensor(pixels)))
        except decoding.TooCostly as e:
            raise Refused(413, f"{name}: {e}.") from None
        except ValueError as e:
            raise Refused(422, f"{name}: {e}.") from None
    with torch.inference_mode():
        probabilities = model(torch.stack(digits)[:, None].float() / 255).softmax(dim=1)
    confidence, prediction = probabilities.max(dim=1)
    return [
        {"prediction": int(p), "confidence": float(c), "probabilities": probs.tolist(), "preview": _png_url(digit)}
        for p, c, probs, digit in zip(prediction, confidence, probabilities, digits)
    ]


def _png_url(digit: torch.Tensor) -> str:
    buffer = io.BytesIO()
    Image.fromarray(digit.numpy()).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
