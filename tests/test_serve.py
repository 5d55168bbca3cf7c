"""``mnist-lite serve``'s API, in-process through FastAPI's test client: each field, each refusal, the limits, and the
same answers as ``mnist-lite predict``. The page in a real browser is tested in test_serve_page.py."""

import asyncio
import base64
import io
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_lite import checkpoints, server
from mnist_lite.cli import main

from helpers import EXAMPLES, csv_rows, fails, png_header, predict_args

PICTURES = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".bmp", ".tiff"})


@pytest.fixture(scope="module")
def model(fitted_checkpoint: Path):
    return checkpoints.load_model(fitted_checkpoint)


@pytest.fixture(scope="module")
def client(model, fitted_checkpoint: Path) -> TestClient:
    return TestClient(server.create_app(model, fitted_checkpoint.name))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _predict_csv(ckpt: Path, folder: Path, output: Path) -> dict[str, dict[str, str]]:
    main(predict_args(ckpt, folder, f"--predictions.output={output}"))
    return {Path(row["path"]).name: row for row in csv_rows(output)}


def test_health_names_the_loaded_checkpoint(client: TestClient, fitted_checkpoint: Path) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "model_loaded": True,
        "checkpoint": fitted_checkpoint.name,
        "parameters": 13_266,
    }


def test_the_page_and_its_assets_come_from_the_package_alone(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["content-security-policy"].startswith("default-src 'self'")  # the browser loads nothing else
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        answer = client.get(asset)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert asset in page.text
        assert "http://" not in answer.text and "https://" not in answer.text
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load its scripts from a CDN


def test_uploads_get_the_same_answers_as_mnist_lite_predict(
    client: TestClient, fitted_checkpoint: Path, tmp_path: Path
) -> None:
    rows = _predict_csv(fitted_checkpoint, EXAMPLES, tmp_path / "predictions.csv")
    assert len(PICTURES) == 5
    for picture in PICTURES:
        answer = client.post("/predict", files={"file": (picture.name, picture.read_bytes())})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        row = rows[picture.name]
        assert body["prediction"] == int(row["prediction"]) == int(picture.name[0])
        assert body["confidence"] == pytest.approx(float(row["confidence"]), abs=5e-5)  # the CSV keeps 4 decimals
        assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert max(body["probabilities"]) == pytest.approx(body["confidence"])


def test_preview_is_the_28x28_image_the_model_saw(client: TestClient) -> None:
    picture = EXAMPLES / "7_dark_on_light_120x160.png"
    body = client.post("/predict", files={"file": (picture.name, picture.read_bytes())}).json()
    header, data = body["preview"].split(",", 1)
    assert header == "data:image/png;base64"
    preview = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    assert preview.shape == (28, 28) and preview.dtype == np.uint8
    assert preview[:4].max() == 0 and preview.max() > 200  # white ink on black, in the 20-px box


def test_a_canvas_data_url_is_read_like_the_same_file(client: TestClient) -> None:
    picture = (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes()
    as_json = client.post("/predict", json={"image": _data_url(picture)})
    as_file = client.post("/predict", files={"file": ("seven.png", picture)})
    assert as_json.status_code == 200
    assert as_json.json() == as_file.json()


def test_several_files_get_a_list_in_their_order(client: TestClient) -> None:
    files = [("file", (p.name, p.read_bytes())) for p in PICTURES]
    answer = client.post("/predict", files=files)
    assert answer.status_code == 200
    assert [a["prediction"] for a in answer.json()] == [int(p.name[0]) for p in PICTURES]


BLANK = _png(np.full((40, 40), 255, dtype=np.uint8))
REFUSALS = {
    "no body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "body is empty"),
    "no content type": ({"content": b"x"}, 415, "content type none"),
    "text": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
    "not json": ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    "json without image": ({"json": {"picture": 1}}, 422, "no string field 'image'"),
    "not a data url": ({"json": {"image": "hello"}}, 422, "base64 data URL"),
    "bad base64": ({"json": {"image": "data:image/png;base64,@@@"}}, 422, "not valid base64"),
    "wrong field": ({"files": {"upload": ("a.png", BLANK)}}, 422, "no field named 'file' (fields sent: 'upload')"),
    "text field": ({"data": {"file": "text"}, "files": {"x": ("x", b"")}}, 422, "must be a file upload"),
    "not an image": ({"files": {"file": ("notes.png", b"hello")}}, 422, "notes.png: unreadable"),
    "blank image": ({"files": {"file": ("blank.png", BLANK)}}, 422, "blank.png: no digit found"),
    "blank canvas": ({"json": {"image": _data_url(BLANK)}}, 422, "no digit found"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_requests_get_a_4xx_that_says_why_and_the_server_goes_on(client: TestClient, case: str) -> None:
    request, status, message = REFUSALS[case]
    answer = client.post("/predict", **request)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert client.get("/health").status_code == 200


def test_a_declared_size_over_the_limit_is_refused_with_413(model) -> None:
    small = TestClient(server.create_app(model, "x.ckpt", max_upload_bytes=1000))
    picture = (EXAMPLES / "4_grey_scan_300x220.tiff").read_bytes()
    assert len(picture) > 1000
    answer = small.post("/predict", files={"file": ("big.tiff", picture)})
    assert answer.status_code == 413
    assert "over the 1,000-byte limit" in answer.json()["error"]


def test_an_undeclared_stream_is_cut_off_at_the_limit(model) -> None:
    """A chunked body gives no length: reading must stop at the limit, not at the end of the stream."""
    app = server.create_app(model, "x.ckpt", max_upload_bytes=100_000)
    chunk, sent, replies = b"\0" * 65_536, [], []

    async def receive() -> dict:
        sent.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}  # endless

    async def send(message: dict) -> None:
        replies.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    assert replies[0]["status"] == 413
    assert sum(sent) <= 100_000 + len(chunk)


def test_a_decompression_bomb_is_refused_by_its_pixel_count(client: TestClient) -> None:
    answer = client.post("/predict", files={"file": ("bomb.png", png_header(30_000, 30_000))})
    assert answer.status_code == 413
    assert "decompression bomb" in answer.json()["error"]  # PIL's own limit, before ours
    answer = client.post("/predict", files={"file": ("bomb.png", png_header(6_000, 6_000))})
    assert answer.status_code == 413
    assert "6000x6000 pixels, more than the 16,777,216 accepted" in answer.json()["error"]


def test_a_server_error_is_logged_with_its_traceback_and_answered_500_without(
    model, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TestClient(server.create_app(model, "x.ckpt"))

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(server, "to_mnist", broken)
    picture = (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes()
    with caplog.at_level(logging.ERROR, logger="mnist_lite.serve"):
        answer = client.post("/predict", files={"file": ("seven.png", picture)})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error; the server's log has the details."}
    assert "the model broke" in caplog.text and "Traceback" in caplog.text
    monkeypatch.undo()
    assert client.post("/predict", files={"file": ("seven.png", picture)}).status_code == 200


def test_serve_refuses_a_bad_checkpoint_in_one_line(tmp_path: Path, capsys) -> None:
    err = fails(["serve", "--ckpt_path", str(tmp_path / "missing.ckpt")], capsys)
    assert "does not exist" in err


def test_serve_refuses_a_port_in_use_in_one_line(fitted_checkpoint: Path, capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        err = fails(["serve", "--ckpt_path", str(fitted_checkpoint), "--port", str(port)], capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Choose another --port" in err


def test_serve_refuses_a_port_out_of_range(fitted_checkpoint: Path, capsys) -> None:
    err = fails(["serve", "--ckpt_path", str(fitted_checkpoint), "--port", "70000"], capsys)
    assert "--port 70000 is not a port" in err
