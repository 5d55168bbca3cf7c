"""``mnist-lite serve``'s API, in-process through FastAPI's test client: each field, each refusal, the limits, and the
same answers as ``mnist-lite predict``. The page in a real browser is tested in test_serve_page.py."""

import asyncio
import base64
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_lite.boundaries import checkpoints
from mnist_lite.cli import main
from mnist_lite.serving import app as server
from mnist_lite.serving import guards

from helpers import EXAMPLES, csv_rows, fails, png_header, predict_args, tiff_of_a_strip_per_row

PICTURES = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".bmp", ".tiff"})


@pytest.fixture(scope="module")
def model(tiny_run: Path):
    return checkpoints.load_model(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def client(model) -> TestClient:
    return TestClient(server.create_app(model, "last.ckpt"), base_url="http://127.0.0.1:8000")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _predict_csv(ckpt: Path, folder: Path, output: Path) -> dict[str, dict[str, str]]:
    main(predict_args(ckpt, folder, f"--predictions.output={output}"))
    return {Path(row["path"]).name: row for row in csv_rows(output)}


def test_health_names_the_loaded_checkpoint(client: TestClient, tiny_checkpoint: Path) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "model_loaded": True,
        "checkpoint": tiny_checkpoint.name,
        "parameters": 13_266,
    }


def test_the_page_and_its_assets_come_from_the_package_alone(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["content-security-policy"].startswith("default-src 'self'")  # the browser loads nothing else
    assets = ("/static/app.js", "javascript"), ("/static/style.css", "text/css"), ("/static/favicon.svg", "image/svg")
    for asset, kind in assets:  # the icon named, or the browser asks for /favicon.ico
        answer = client.get(asset)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert asset in page.text
        text = answer.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a place to load from
        assert "http://" not in text and "https://" not in text
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load its scripts from a CDN


def test_uploads_get_the_same_answers_as_mnist_lite_predict(
    client: TestClient, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    rows = _predict_csv(tiny_checkpoint, EXAMPLES, tmp_path / "predictions.csv")
    assert len(PICTURES) == 5
    for picture in PICTURES:
        answer = client.post("/predict", files={"file": (picture.name, picture.read_bytes())})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        row = rows[picture.name]
        assert body["prediction"] == int(row["prediction"])
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
    alone = [client.post("/predict", files=[file]).json() for file in files]
    assert answer.status_code == 200
    assert [a["prediction"] for a in answer.json()] == [a["prediction"] for a in alone]
    assert [a["confidence"] for a in answer.json()] == pytest.approx([a["confidence"] for a in alone], abs=1e-5)


BLANK = _png(np.full((40, 40), 255, dtype=np.uint8))
REFUSALS = {
    "no body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "body is empty"),
    "no content type": ({"content": b"x"}, 415, "content type none"),
    "text": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
    "not json": (
        {"content": b"{", "headers": {"content-type": "application/json"}},
        400,
        "the body is not JSON this API reads",
    ),
    "json without image": ({"json": {"picture": 1}}, 422, "no string field 'image'"),
    "not a data url": ({"json": {"image": "hello"}}, 422, "base64 data URL"),
    "bad base64": ({"json": {"image": "data:image/png;base64,@@@"}}, 422, "not valid base64"),
    "wrong field": ({"files": {"upload": ("a.png", BLANK)}}, 422, "no field named 'file' (fields sent: 'upload')"),
    "text field": ({"data": {"file": "text"}, "files": {"x": ("x", b"")}}, 422, "must be a file upload"),
    "not an image": ({"files": {"file": ("notes.png", b"hello")}}, 422, "notes.png: unreadable"),
    "blank image": ({"files": {"file": ("blank.png", BLANK)}}, 422, "blank.png: no digit found"),
    "blank canvas": ({"json": {"image": _data_url(BLANK)}}, 422, "no digit found"),
    "17 files": ({"files": [("file", ("a.png", BLANK))] * 17}, 400, "Too many files. Maximum number of files is 16"),
    "17 fields": (
        {"data": {f"f{i}": "x" for i in range(17)}, "files": {"file": ("a.png", BLANK)}},
        400,
        "Too many fields",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_requests_get_a_4xx_that_says_why_and_the_server_goes_on(client: TestClient, case: str) -> None:
    request, status, message = REFUSALS[case]
    answer = client.post("/predict", **cast(dict[str, Any], request))
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert client.get("/health").status_code == 200


def test_a_declared_size_over_the_limit_is_refused_with_413(model) -> None:
    small = TestClient(server.create_app(model, "x.ckpt", max_upload_bytes=1000), base_url="http://127.0.0.1:8000")
    picture = (EXAMPLES / "4_grey_scan_300x220.tiff").read_bytes()
    assert len(picture) > 1000
    answer = small.post("/predict", files={"file": ("big.tiff", picture)})
    assert answer.status_code == 413
    assert "over the 1,000-byte limit" in answer.json()["error"]


STREAM_HEADS = {  # the start of a well-formed body, then one that never ends
    "multipart": (
        b"multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n',
    ),
    "json": (b"application/json", b'{"image": "data:image/png;base64,'),
}


@pytest.mark.parametrize("kind", STREAM_HEADS)
def test_an_undeclared_stream_is_cut_off_at_the_limit(model, kind: str) -> None:
    """A chunked body gives no length: reading must stop at the limit, not at the end of the stream."""
    app = server.create_app(model, "x.ckpt", max_upload_bytes=100_000)
    content_type, head = STREAM_HEADS[kind]
    chunk, replies = b"A" * 65_536, []
    sent: list[int] = []

    async def receive() -> dict:
        body = chunk if sent else head
        sent.append(len(body))
        return {"type": "http.request", "body": body, "more_body": True}  # endless

    async def send(message: MutableMapping[str, Any]) -> None:
        replies.append(message)

    scope = _post_scope([(b"content-type", content_type), (b"transfer-encoding", b"chunked")])
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    assert replies[0]["status"] == 413
    assert sum(sent) <= 100_000 + len(chunk)


def test_a_decompression_bomb_is_refused_by_its_pixel_count(client: TestClient) -> None:
    answer = client.post("/predict", files={"file": ("bomb.png", png_header(30_000, 30_000))})
    assert answer.status_code == 413
    assert "decompression bomb" in answer.json()["error"]  # PIL's own limit, before ours
    answer = client.post("/predict", files={"file": ("bomb.png", png_header(6_000, 6_000))})
    assert answer.status_code == 413
    assert "Image size (36000000 pixels) exceeds limit of 16777216 pixels" in answer.json()["error"]


def test_a_server_error_is_logged_with_its_traceback_and_answered_500_without(
    model, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TestClient(server.create_app(model, "x.ckpt"), base_url="http://127.0.0.1:8000")

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


def test_serve_refuses_a_port_in_use_in_one_line(tiny_checkpoint: Path, capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        err = fails(["serve", "--ckpt_path", str(tiny_checkpoint), "--port", str(port)], capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Choose another --port" in err


def test_serve_refuses_a_port_out_of_range(tiny_checkpoint: Path, capsys) -> None:
    err = fails(["serve", "--ckpt_path", str(tiny_checkpoint), "--port", "70000"], capsys)
    assert "--port 70000 is not a port" in err


# ---- hostile clients: other sites, other names, slow or endless requests, expensive images ----


def test_only_loopback_names_ip_addresses_and_allowed_hosts_are_answered(model) -> None:
    app = server.create_app(model, "x.ckpt", allowed_hosts=["digits.example.org"])
    for host, status in [
        ("127.0.0.1:8000", 200),
        ("localhost:8000", 200),
        ("[::1]:8000", 200),
        ("192.168.1.5:8000", 200),  # an address typed in: no page can rebind a name to it
        ("digits.example.org", 200),
        ("rebound.example.com:8000", 400),  # a DNS name that now points here
        ("", 400),
    ]:
        answer = TestClient(app).get("/health", headers={"host": host})
        assert answer.status_code == status, host
        if status == 400:
            assert "is not served here" in answer.json()["error"]


@pytest.mark.parametrize("host", ["[", "[::1", "a b"])
def test_a_malformed_host_is_a_400_that_says_why(client: TestClient, host: str) -> None:
    answer = client.get("/health", headers={"host": host})
    assert answer.status_code == 400 and "is not served here" in answer.json()["error"]


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "http://[x]"])
def test_a_malformed_origin_is_a_400_that_says_why(client: TestClient, origin: str) -> None:
    picture = {"file": ("seven.png", (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes())}
    answer = client.post("/predict", files=picture, headers={"origin": origin})
    assert answer.status_code in (400, 403) and "\n" not in answer.json()["error"]
    assert answer.status_code == 400 or origin == "http://[x]", answer.json()


def test_only_the_servers_own_page_may_post(client: TestClient) -> None:
    picture = {"file": ("seven.png", (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes())}
    elsewhere = client.post("/predict", files=picture, headers={"origin": "https://evil.example"})
    assert elsewhere.status_code == 403 and "only this server's own page may post" in elsewhere.json()["error"]
    assert client.post("/predict", files=picture, headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
    assert client.post("/predict", files=picture).status_code == 200  # curl sends no Origin


def test_unknown_paths_and_methods_answer_with_an_error_field(client: TestClient) -> None:
    for answer, status in ((client.get("/nope"), 404), (client.get("/predict"), 405)):
        assert answer.status_code == status and "error" in answer.json() and "detail" not in answer.json()


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"image": ' + b"9" * 5_000 + b"}"],
    ids=["nested-100000-deep", "integer-of-5000-digits"],
)
def test_json_that_costs_too_much_to_read_is_a_400(client: TestClient, body: bytes) -> None:
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "the body is not JSON this API reads" in answer.json()["error"]


def test_a_picture_over_the_decoding_bound_is_a_413_and_health_answers_meanwhile(
    model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding runs in a worker process with a CPU and memory bound (tightened here to 0.25 s): a picture that
    would cost seconds is refused, and /health answers in under 100 ms all along."""
    monkeypatch.setenv("MNIST_LITE_DECODE_SECONDS", "0.25")
    reset = getattr(sys.modules.get("mnist_lite.boundaries.decoding"), "reset", lambda: None)
    reset()
    app = server.create_app(model, "x.ckpt", max_upload_bytes=8 * 2**20)
    costly = {"file": ("strips.tif", tiff_of_a_strip_per_row(600_000))}
    waits: list[float] = []
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        client.post("/predict", files={"file": ("seven.png", (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes())})
        answers: list[Any] = []
        upload = threading.Thread(target=lambda: answers.append(client.post("/predict", files=costly)))
        start = time.monotonic()
        upload.start()
        while upload.is_alive():
            begun = time.monotonic()
            assert client.get("/health").status_code == 200
            waits.append(time.monotonic() - begun)
            time.sleep(0.02)
        upload.join()
    reset()
    assert answers[0].status_code == 413, answers[0].text
    assert answers[0].json()["error"].startswith("strips.tif: refused: over the time/memory bound")
    assert time.monotonic() - start < 4 and len(waits) > 3
    assert sorted(waits)[len(waits) // 2] < 0.1  # the median; a loaded test machine may stall any one request


def test_health_answers_while_an_upload_is_being_read(model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images are read in a thread: the event loop goes on answering."""
    started = threading.Event()

    def slow(*args):
        started.set()
        time.sleep(3)
        return [{"prediction": 0}]

    monkeypatch.setattr(server, "read_digits", slow)
    with TestClient(server.create_app(model, "x.ckpt"), base_url="http://127.0.0.1:8000") as client:
        picture = {"file": ("seven.png", (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes())}
        upload = threading.Thread(target=client.post, args=("/predict",), kwargs={"files": picture})
        upload.start()
        assert started.wait(10)
        begun = time.monotonic()
        assert client.get("/health").status_code == 200
        waited = time.monotonic() - begun
        upload.join()
    assert waited < 2  # not behind the 3 s upload


def test_a_body_that_takes_too_long_is_a_408(model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guards, "BODY_TIMEOUT_S", 0.5)
    app, replies = server.create_app(model, "x.ckpt"), []

    async def receive() -> dict:
        await asyncio.sleep(0.2)  # a byte now and then
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        replies.append(message)

    scope = _post_scope([(b"content-type", b"application/json")])
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    assert replies[0]["status"] == 408


@pytest.mark.parametrize("kind", STREAM_HEADS)
def test_a_client_that_leaves_mid_body_costs_no_traceback(model, kind: str) -> None:
    app, replies = server.create_app(model, "x.ckpt"), []
    content_type, head = STREAM_HEADS[kind]
    first: dict[str, Any] = {"type": "http.request", "body": head, "more_body": True}
    messages = iter([first, {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        replies.append(message)

    scope = _post_scope([(b"content-type", content_type), (b"transfer-encoding", b"chunked")])
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))  # raised ClientDisconnect: a logged 500
    assert replies[0]["status"] == 400


@pytest.mark.parametrize("name", ["example.com:8103", "http://foo.org"])
def test_serve_refuses_an_allowed_host_that_could_never_match(name: str, tiny_checkpoint: Path, capsys) -> None:
    err = fails(["serve", "--ckpt_path", str(tiny_checkpoint), "--allowed_hosts", name], capsys)
    assert f"--allowed_hosts {name!r}: give host names alone, as example.com (no scheme, no port)." in err


@pytest.mark.parametrize("host", ["", "0", "*"])
def test_serve_refuses_a_host_that_is_no_address(host: str, tiny_checkpoint: Path, capsys) -> None:
    err = fails(["serve", "--ckpt_path", str(tiny_checkpoint), "--host", host], capsys)
    assert "is not an address: 127.0.0.1 for this machine, 0.0.0.0 for every network" in err


@pytest.mark.slow
def test_a_connection_that_sends_no_headers_is_closed_and_health_still_answers(tiny_checkpoint: Path) -> None:
    """300 connections that send nothing or half a header take no one's place, and are closed once late."""
    env = {**os.environ, "MNIST_LITE_TEST_HEADER_TIMEOUT": "2"}
    command = [sys.executable, "-c", HEADER_TIMEOUT_SERVE, str(tiny_checkpoint)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        while not line.startswith("Serving "):
            line = _line(process.stdout)
            assert line, _text(process.stderr)
        host, port = line.split("http://")[1].split("/")[0].split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(300)]
        for i, sock in enumerate(idle):
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a header
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=10) as reply:
            assert reply.status == 200
        time.sleep(3)
        assert all(sock.recv(1024) == b"" for sock in idle)  # closed by the server after its deadline
        for sock in idle:
            sock.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_workers_share_the_port_and_stop_together_on_sigterm(tiny_checkpoint: Path) -> None:
    """--workers 2: uvicorn's worker processes each build the app from the environment, answer on the one port,
    and end with the command, which says so and exits 0."""
    command = [sys.executable, "-m", "mnist_lite", "serve", "--ckpt_path", str(tiny_checkpoint), "--port", "0"]
    process = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("Serving "):
            line = _line(process.stdout)
            assert line, _text(process.stderr)
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "health", timeout=120) as reply:  # the workers import torch first
            assert reply.status == 200
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        workers = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        picture = (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes()
        body = json.dumps({"image": _data_url(picture)}).encode()
        request = urllib.request.Request(url + "predict", body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert json.loads(reply.read())["prediction"] in range(10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert _text(process.stdout).strip() == "Stopped."
        assert len(workers) == 2 and not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


HEADER_TIMEOUT_SERVE = """
import os, sys
from mnist_lite.serving import protocol
from mnist_lite.cli import main
protocol.HEADER_TIMEOUT_S = float(os.environ["MNIST_LITE_TEST_HEADER_TIMEOUT"])
main(["serve", "--ckpt_path", sys.argv[1], "--port", "0"])
"""


def test_the_one_epoch_network_serves_and_predicts_like_the_seeds(one_epoch_checkpoint: Path, in_tmp: Path) -> None:
    model = checkpoints.load_model(one_epoch_checkpoint)
    client = TestClient(server.create_app(model, one_epoch_checkpoint.name), base_url="http://127.0.0.1:8000")
    assert client.get("/health").json()["parameters"] == 19_786
    served = {
        p.name: client.post("/predict", files={"file": (p.name, p.read_bytes())}).json()["prediction"] for p in PICTURES
    }
    rows = _predict_csv(one_epoch_checkpoint, EXAMPLES, in_tmp / "out.csv")
    assert served == {name: int(rows[name]["prediction"]) for name in served}


def _text(stream: IO[str] | None) -> str:
    return stream.read() if stream else ""


def _line(stream: IO[str] | None) -> str:
    return stream.readline() if stream else ""


def _post_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI request for POST /predict from 127.0.0.1, as uvicorn hands it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
