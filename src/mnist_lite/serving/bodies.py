"""The images a POST /predict sends: multipart ``file`` fields, or a canvas's data URL in JSON. The body arrives
through ``guards.BoundedBody``, which bounds its size and time; anything else wrong is a 4xx that says what."""

import base64
import binascii
import json

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_FILES = 16  # images per request
USAGE = 'send an image as a multipart field named \'file\', or JSON {"image": "data:image/png;base64,..."}'


class Refused(HTTPException):
    """A request this API answers with a 4xx and a JSON ``{"error": ...}`` that says what was wrong."""

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.detail}, status_code=self.status_code)


async def pictures(request: Request) -> tuple[list[tuple[str, bytes]], bool]:
    """The request's images as (name, bytes), and whether it sent several (which are answered with a list)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _from_multipart(request)
    if kind != "application/json":
        raise Refused(415, f"content type {kind or 'none'} is not accepted: {USAGE}.")
    if not (body := await request.body()):
        raise Refused(400, f"the request body is empty: {USAGE}.")
    return [("image", _from_data_url(body))], False


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


async def _from_multipart(request: Request) -> tuple[list[tuple[str, bytes]], bool]:
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except Refused:
        raise
    except HTTPException as e:  # Starlette's answer to a malformed body or too many parts
        raise Refused(400, f"the multipart body cannot be read ({e.detail}).") from None
    if not (uploads := form.getlist("file")):
        fields = ", ".join(repr(key) for key in form) or "none"
        raise Refused(422, f"no field named 'file' (fields sent: {fields}): {USAGE}.")
    files = [upload for upload in uploads if isinstance(upload, UploadFile)]
    if len(files) < len(uploads):
        raise Refused(422, "the field 'file' must be a file upload, not text.")
    return [(file.filename or "file", await file.read()) for file in files], len(files) > 1
