"""The web demo end to end: `infinitystar serve` in a subprocess, driven in headless Chromium (playwright).

The model is the built-in one when the package ships it (``BUILTIN_MODEL_DIR/model_index.json``; then the
server is started without ``--checkpoint``, exactly as a user would), otherwise the tiny random model of
``tests.helpers.pipeline`` saved in our layout. Chromium is the system's (Debian: ``apt-get install chromium``), so
playwright never downloads a browser. Without a browser or playwright the tests skip locally and FAIL under CI
(``CI`` set): ``.ci/run`` installs both.

``INFINITYSTAR_DEMO_SCREENSHOT=/path/shot.png`` saves a screenshot of the result page there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from infinitystar.generation.layouts import BUILTIN_MODEL_DIR, MODEL_INDEX

pytestmark = pytest.mark.slow  # a server start (~10 s on 2 cores) and a browser; each generation is < 1 s

SCREENSHOT_ENV = "INFINITYSTAR_DEMO_SCREENSHOT"
CHROMIUM_ENV = "INFINITYSTAR_CHROMIUM"
SERVER_START_TIMEOUT_S = 180
GENERATION_TIMEOUT_MS = 120_000
UPLOAD_LIMIT_MB = 1


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run; .ci/run installs chromium and playwright)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """The Chromium to drive: $INFINITYSTAR_CHROMIUM when set (only that one), else /usr/bin/chromium, else one
    on PATH."""
    chosen = os.environ.get(CHROMIUM_ENV)
    candidates = (
        [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    )
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_checkpoint(tmp_path_factory) -> str | None:
    """None (serve's default, the built-in model) when it is installed, else a tiny model folder."""
    if (BUILTIN_MODEL_DIR / MODEL_INDEX).is_file():
        return None
    from infinitystar.generation.pipeline import InfinityStarPipeline
    from tests.helpers.pipeline import TINY_PIPELINE, make_released_layout

    released = make_released_layout(tmp_path_factory.mktemp("released"))
    pipe = InfinityStarPipeline.from_pretrained(released, device="cpu", config=TINY_PIPELINE)
    return str(pipe.save_pretrained(tmp_path_factory.mktemp("demo_model") / "model"))


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    exe = find_chromium()
    if exe is None:
        _unavailable(f"no Chromium found (apt-get install -y chromium, or set {CHROMIUM_ENV})")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


@dataclass
class DemoServer:
    url: str
    proc: subprocess.Popen
    log: Path  #: the server's stdout and stderr
    tmp: Path  #: its TMPDIR: the temporary results folder and gradio's cache are made here


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, browser):
    """`infinitystar serve` running in a subprocess on a free local port, as a user starts it: no --output-dir
    (results go to a temporary folder) and no GRADIO_TEMP_DIR; uploads limited to 1 MB."""
    checkpoint = demo_checkpoint(tmp_path_factory)
    work = tmp_path_factory.mktemp("serve")
    port = free_port()
    cmd = [sys.executable, "-m", "infinitystar.cli", "serve", "--port", str(port), "--device", "cpu"]
    cmd += ["--max-upload-mb", str(UPLOAD_LIMIT_MB)]
    if checkpoint is not None:
        cmd += ["--checkpoint", checkpoint]
    (work / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(work / "tmp"))
    log_path = work / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"infinitystar serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"infinitystar serve did not answer in {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield DemoServer(url, proc, log_path, work / "tmp")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(demo_server):
    """The URL of the demo server."""
    return demo_server.url


@pytest.fixture
def page(browser):
    """A fresh browser context per test: a new gradio session (empty gallery)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    yield context.new_page()
    context.close()


def open_demo(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#t2v-prompt textarea", timeout=60_000)


def generate_text_to_video(page, prompt: str, seed: int) -> dict:
    """Fill the text-to-video tab, generate, wait until the result video has loaded its metadata."""
    page.fill("#t2v-prompt textarea", prompt)
    random_seed = page.locator("#t2v-random-seed input[type=checkbox]")
    if random_seed.is_checked():
        random_seed.uncheck()
    page.fill("#t2v-seed input", str(seed))
    page.click("#t2v-generate")
    page.wait_for_function(
        f"""() => {{
            const v = document.querySelector('#t2v-result video');
            const info = document.querySelector('#t2v-info');
            return v && v.src && v.readyState >= 1 && info && info.innerText.includes('seed {seed}');
        }}""",
        timeout=GENERATION_TIMEOUT_MS,
    )
    return page.eval_on_selector(
        "#t2v-result video", "v => ({src: v.src, readyState: v.readyState, duration: v.duration, error: v.error})"
    )


def test_text_to_video_plays_in_the_page_and_is_downloadable(server, page, tmp_path):
    open_demo(page, server)
    summary = page.inner_text("#model-summary")
    assert "fixed by the loaded weights" in summary and "×" in summary  # the model's resolution is shown
    video = generate_text_to_video(page, "a red cat runs in the garden", seed=7)
    assert video["error"] is None and video["readyState"] >= 1 and video["duration"] > 0
    response = page.request.get(video["src"])  # the src the <video> plays is an H.264 mp4
    assert response.status == 200 and response.body()[4:8] == b"ftyp"
    assert "seed 7" in page.inner_text("#t2v-info")
    assert "seed 7 · a red cat runs in the garden" in page.inner_text("#gallery")
    download = page.locator("#t2v-download a[href*='.mp4']").first
    assert "seed7" in download.get_attribute("href")

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])


def test_corrupt_upload_shows_the_error_and_the_server_keeps_serving(server, page, browser, tmp_path):
    open_demo(page, server)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not image data" * 20)

    page.click("button[role=tab]:has-text('image-to-video')")
    page.wait_for_selector("#i2v-upload", state="visible")
    page.set_input_files("#i2v-upload input[type=file]", str(corrupt))
    message = "cannot read the image 'corrupt.png': it is corrupt or not an image"
    page.wait_for_function(
        f"() => document.querySelector('#i2v-upload-status').innerText.includes({message!r})", timeout=30_000
    )
    page.fill("#i2v-prompt textarea", "a cat walks")
    page.click("#i2v-generate")  # generating with it anyway: the same message as an error toast
    page.locator("[data-testid=toast-text]", has_text=message).first.wait_for(timeout=30_000)
    assert page.locator("#i2v-result video").count() == 0

    page.click("button[role=tab]:has-text('text-to-video')")
    page.fill("#t2v-prompt textarea", "   ")
    page.click("#t2v-generate")
    page.locator("[data-testid=toast-text]", has_text="the prompt is empty").first.wait_for(timeout=30_000)

    # the server still answers, also two visitors at once (they wait in the queue for the one model)
    other = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    try:
        open_demo(other, server)
        for p, seed in ((page, 11), (other, 12)):
            p.fill("#t2v-prompt textarea", f"a boat on the sea {seed}")
            p.locator("#t2v-random-seed input[type=checkbox]").uncheck()
            p.fill("#t2v-seed input", str(seed))
        page.click("#t2v-generate")
        other.click("#t2v-generate")
        for p, seed in ((page, 11), (other, 12)):
            p.wait_for_function(
                f"() => document.querySelector('#t2v-info').innerText.includes('seed {seed}')",
                timeout=GENERATION_TIMEOUT_MS,
            )
            p.wait_for_function("() => document.querySelector('#t2v-result video')?.readyState >= 1")
            assert f"seed {seed} · a boat on the sea {seed}" in p.inner_text("#gallery")
    finally:
        other.context.close()


def test_random_seed_is_shown_and_the_gallery_shows_a_frame(server, page):
    open_demo(page, server)
    assert page.locator("#t2v-random-seed input[type=checkbox]").is_checked()  # the default: a random seed
    page.fill("#t2v-prompt textarea", "a green square moving up")
    page.click("#t2v-generate")
    page.wait_for_function(
        "() => document.querySelector('#t2v-info').innerText.includes('seed')", timeout=GENERATION_TIMEOUT_MS
    )
    seed = page.inner_text("#t2v-info").split("seed ", 1)[1].split()[0]
    page.wait_for_function(f"() => document.querySelector('#t2v-seed input').value === '{seed}'")  # the seed used
    assert page.locator("#t2v-random-seed input[type=checkbox]").is_checked()  # the next one is random again
    # the gallery tile is a still of the video's first frame (an image that loaded), not a grey video icon
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].some(i => i.naturalWidth > 0)")
    sources = page.eval_on_selector_all("#gallery img", "els => els.map(e => e.src)")
    assert any(src.endswith(".jpg") and f"seed{seed}" in src for src in sources)


def test_oversize_upload_says_why_and_is_not_sent(server, page, tmp_path):
    import numpy as np
    from PIL import Image

    big = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)  # incompressible: ~1.9 MB
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 2**20
    open_demo(page, server)
    page.click("button[role=tab]:has-text('image-to-video')")
    page.wait_for_selector("#i2v-upload", state="visible")
    page.set_input_files("#i2v-upload input[type=file]", str(big))
    message = f"'big.png' is {big.stat().st_size / 2**20:.1f} MB, larger than the {UPLOAD_LIMIT_MB} MB limit"
    page.wait_for_function(
        f"() => document.querySelector('#i2v-upload-status').innerText.includes({message!r})", timeout=30_000
    )
    assert "Error" not in page.inner_text("#i2v-upload")  # no bare red badge: the file was never sent
    assert page.locator("[data-testid=toast-body]").count() == 0


def test_refused_requests_are_messages_in_the_page_and_not_tracebacks_in_the_log(demo_server, page):
    open_demo(page, demo_server.url)
    page.locator("#t2v-random-seed input[type=checkbox]").uncheck()
    page.fill("#t2v-prompt textarea", "a cat")
    page.fill("#t2v-seed input", "99999999999")  # above the page's limit: refused by the demo's own check
    page.click("#t2v-generate")
    page.locator("[data-testid=toast-text]", has_text="seed 99999999999").first.wait_for(timeout=30_000)
    page.fill("#t2v-seed input", "3")
    page.fill("#t2v-prompt textarea", " ")
    page.click("#t2v-generate")
    page.locator("[data-testid=toast-text]", has_text="the prompt is empty").first.wait_for(timeout=30_000)
    log = demo_server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_stopping_the_server_removes_its_temporary_folders(demo_server):
    """Run last in this module: it stops the module's server (SIGTERM, as a service manager would)."""
    tmp = demo_server.tmp
    assert any(p.name.startswith("infinitystar-demo-") for p in tmp.iterdir())  # results and gradio's cache
    demo_server.proc.terminate()
    demo_server.proc.wait(timeout=60)
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert "Traceback" not in demo_server.log.read_text(errors="replace")
