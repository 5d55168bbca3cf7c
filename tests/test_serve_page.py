"""The page of ``mnist-lite serve`` in a real browser: Playwright drives headless Chromium against a running server,
draws digits from stroke coordinates with a mouse and a finger, and reads what the page shows."""

import base64
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lite.cli import main

from helpers import csv_rows, predict_args

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")

Stroke = list[tuple[float, float]]  # points in the pad, as fractions of its width and height
DIGITS: dict[int, list[Stroke]] = {
    1: [[(0.45, 0.15), (0.55, 0.85)]],
    0: [[(0.5 + 0.22 * math.sin(t / 12 * math.tau), 0.5 - 0.32 * math.cos(t / 12 * math.tau)) for t in range(13)]],
    7: [[(0.25, 0.2), (0.75, 0.2), (0.4, 0.85)]],
}


def _chromium(playwright) -> str | None:
    """The system's Chromium (Debian's package here), else the one `playwright install chromium` downloads."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    own = playwright.chromium.executable_path
    return own if own and Path(own).is_file() else None


@pytest.fixture(scope="module")
def served(fitted_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mnist-lite serve --port 0`` in a subprocess, as users start it: its URL and the process."""
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnist_lite", "serve", "--ckpt_path", "last", "--port", "0"],
            cwd=fitted_checkpoint.parents[3],  # the folder holding lightning_logs/: "last" is its newest run's
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Checkpoint: lightning_logs/version_0/checkpoints/last.ckpt (run ")
        line = process.stdout.readline()
        assert line.startswith("Serving "), f"{line!r}; stderr: {log.read_text()}"
        yield line.split(" at ")[1].split()[0], process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(served) -> Iterator:
    with sync_api.sync_playwright() as playwright:
        executable = _chromium(playwright)
        if executable is None:
            if os.environ.get("CI"):
                pytest.fail("CI must run the browser test: install chromium (apt-get install -y chromium)")
            pytest.skip("no Chromium found: apt-get install -y chromium, or playwright install chromium")
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def _draw_with_mouse(page, strokes: list[Stroke]) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=10)
        page.mouse.up()


def _draw_with_finger(page, strokes: list[Stroke]) -> None:
    """Touch events through the DevTools protocol: Chromium turns them into pointer events of type touch."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        path = [points[0]]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            path += [(x0 + (x1 - x0) * i / 10, y0 + (y1 - y0) * i / 10) for i in range(1, 11)]
        for i, (x, y) in enumerate(path):
            kind = "touchStart" if i == 0 else "touchMove"
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def _shown(page) -> int:
    page.wait_for_selector('#result[data-state="ready"]', timeout=10_000)
    return int(page.locator("#digit").text_content())


def test_digits_drawn_with_a_mouse_are_read_as_drawn(served, browser, tmp_path: Path) -> None:
    url, _ = served
    page = browser.new_page(viewport={"width": 800, "height": 560})
    page.goto(url)
    assert page.locator("#model").text_content().endswith("13,266 parameters")
    # before the first drawing the preview has no image: it takes its place, but shows no broken-image icon
    assert page.eval_on_selector("#preview", "e => getComputedStyle(e).visibility") == "hidden"
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        assert page.locator("#result").get_attribute("data-state") == "empty"
        _draw_with_mouse(page, strokes)
        assert _shown(page) == digit
        assert page.locator("#bars li.top .label").text_content() == str(digit)
        assert page.locator("#preview").get_attribute("src").startswith("data:image/png;base64,")
        assert page.eval_on_selector("#preview", "e => getComputedStyle(e).visibility") == "visible"
        page.screenshot(path=tmp_path / f"serve-{digit}.png")
    print(f"screenshots: {tmp_path}/serve-*.png")


def test_the_page_agrees_with_mnist_lite_predict_on_the_same_drawing(
    served, browser, fitted_checkpoint: Path, tmp_path: Path
) -> None:
    url, _ = served
    page = browser.new_page()
    page.goto(url)
    _draw_with_mouse(page, DIGITS[7])
    drawn = _shown(page)
    drawing = tmp_path / "drawn.png"
    data_url = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    drawing.write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
    output = tmp_path / "predictions.csv"
    main(predict_args(fitted_checkpoint, drawing, f"--predictions.output={output}"))
    (row,) = csv_rows(output)
    assert int(row["prediction"]) == drawn == 7
    # The same file through the page's file picker: the server reads the file itself.
    page.click("#clear")
    page.set_input_files("#file", drawing)
    assert _shown(page) == drawn
    assert page.locator("#confidence").text_content() == f"{100 * float(row['confidence']):.1f}% sure"


def test_on_a_phone_a_finger_draws_without_scrolling_the_page(served, browser, tmp_path: Path) -> None:
    url, _ = served
    context = browser.new_context(viewport={"width": 375, "height": 560}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(url)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the phone
    assert page.evaluate("document.documentElement.scrollHeight") > 560  # so a drag could scroll it
    _draw_with_finger(page, DIGITS[1])
    assert _shown(page) == 1
    assert page.evaluate("window.scrollY") == 0
    page.screenshot(path=tmp_path / "serve-phone.png", full_page=True)
    context.close()


def test_the_page_loads_with_every_request_answered_and_a_clean_console(served, browser) -> None:
    """Each request the page makes is answered, its tab icon included, and the console shows no error."""
    url, _ = served
    page = browser.new_page()
    failed: list[str] = []

    def on_response(answer) -> None:
        if answer.status >= 400:
            failed.append(f"{answer.status} {answer.url}")

    def on_console(message) -> None:
        if message.type == "error":
            failed.append(message.text)

    page.on("response", on_response)
    page.on("console", on_console)
    page.goto(url, wait_until="networkidle")
    _draw_with_mouse(page, DIGITS[7])
    assert _shown(page) == 7
    page.wait_for_load_state("networkidle")
    assert failed == []  # the browser asks for /favicon.ico unless the page names its icon


def test_serve_stops_cleanly_on_sigterm(served) -> None:
    _, process = served
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert process.stdout is not None and "Stopped." in process.stdout.read()
