"""The demo's sparsity and penalty charts, seen in TensorBoard in a real browser.

Trains `keras_l1.demo` for a few epochs, serves its logs with the real
`tensorboard` on a free loopback port, opens the Scalars page in Debian's
headless Chromium (driven by Selenium through Debian's `chromium-driver`),
and checks that the sparsity and penalty charts are listed and drawn on the
Scalars page, then that the Custom Scalars page shows SparsityLogger's layout
with the expected lines. The screenshots become docs/img/tensorboard.png and
docs/img/tensorboard-custom-scalars.png.

Not in the default run (it needs the system browser): run it with
`python -m pytest -m browser` after
`apt-get install -y chromium chromium-driver` and `pip install selenium`.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote
from urllib.parse import urlsplit

import pytest

from keras_l1 import demo
from keras_l1._weights import regularized_weights

pytestmark = [pytest.mark.browser, pytest.mark.tensorflow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "tensorboard.png"
CUSTOM_SCREENSHOT = SCREENSHOT.with_name("tensorboard-custom-scalars.png")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Belt and braces for "nothing leaves loopback": no other host resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
TIMEOUT = 90

# The deep text and the drawn lines of every scalar card. The Scalars
# dashboard is built from web components, so it walks their shadow roots.
CARDS_SCRIPT = """
const cards = [];
const linesIn = (root) => {
  let lines = 0;
  for (const el of root.querySelectorAll('*')) {
    if (el.tagName.toLowerCase() === 'path' && el.classList.contains('line')
        && (el.getAttribute('d') || '').length > 10) lines += 1;
    if (el.shadowRoot) lines += linesIn(el.shadowRoot);
  }
  return lines;
};
const textIn = (root) => {
  let text = root.textContent || '';
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) text += '\\n' + textIn(el.shadowRoot);
  }
  return text;
};
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (['tf-scalar-card', 'tf-custom-scalar-multi-line-chart-card'].includes(
        el.tagName.toLowerCase())) {
      cards.push({text: textIn(el.shadowRoot || el), lines: linesIn(el.shadowRoot || el)});
    }
    if (el.shadowRoot) walk(el.shadowRoot);
  }
};
walk(document);
return cards;
"""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, what: str):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"Timed out after {TIMEOUT} s waiting for {what}")


@contextlib.contextmanager
def tensorboard_server(log_dir: Path):
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )

    def answers():
        if server.poll() is not None:
            raise AssertionError(f"tensorboard exited: {server.stderr.read().decode()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "data/runs", timeout=2) as response:
                return {"sparsity", "train", "validation"} <= set(json.loads(response.read()))
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_until(answers, f"tensorboard to serve the demo's runs at {url}")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def headless_chromium(profile_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager would try to download a browser or driver otherwise.
    os.environ["SE_OFFLINE"] = "true"
    for program in (CHROMIUM, CHROMEDRIVER):
        assert os.access(program, os.X_OK), (
            f"{program} is missing: apt-get install -y chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(TIMEOUT)
        # The page itself 1400×900 (a window size would include the frame).
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()


def requested_urls(driver) -> set:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


class TestSparsityLogger:
    def test_demo_charts_are_listed_on_the_tensorboard_scalars_page(self, tmp_path):
        log_dir = tmp_path / "runs" / "demo"
        # The demo as users run it (30 epochs, a few seconds): the screenshot
        # is the one docs/tensorboard.md shows and describes.
        result = demo.run(log_dir=str(log_dir))
        layers = sorted({weight.layer for weight in regularized_weights(result["model"])})
        assert layers == ["hidden"]
        # One regularized layer: the totals are its curves, written once.
        expected = ["sparsity", "penalty"]

        profile_dir = tmp_path / "chromium-profile"
        profile_dir.mkdir()
        with tensorboard_server(log_dir) as url, headless_chromium(profile_dir) as driver:
            # As in the docs: tags filtered to keras_l1's, no smoothing.
            tag_filter = quote("sparsity|penalty", safe="")
            driver.get(f"{url}#scalars&tagFilter={tag_filter}&_smoothingWeight=0")

            def drawn_charts():
                drawn = {
                    tag
                    for card in driver.execute_script(CARDS_SCRIPT)
                    for tag in expected
                    if re.search(rf"tag: {tag}\b(?!/)", card["text"]) and card["lines"] > 0
                }
                return drawn if drawn == set(expected) else None

            drawn = wait_until(drawn_charts, f"the charts {expected} to be drawn")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(SCREENSHOT))

            # The Custom Scalars page: SparsityLogger's layout, its category open.
            driver.get(f"{url}#custom_scalars&_smoothingWeight=0")

            def custom_charts():
                cards = driver.execute_script(CARDS_SCRIPT)
                # Each card's title, then its lines: sparsity and penalty from the
                # sparsity run, loss from train, validation and val_data_loss.
                # Each card lists the (tag, run) pairs its tag patterns matched.
                # (The Scalars page's cards stay in the document, without such a list.)
                matches = [
                    (sorted(re.findall(r"◼\s+(\S+)\s+\((\w+)\)", card["text"])), card["lines"])
                    for card in cards
                ]
                drawn = [(found, lines) for found, lines in matches if found and lines > 0]
                return drawn if len(drawn) == 3 else None

            custom = wait_until(custom_charts, "the Custom Scalars charts to be drawn")
            assert driver.save_screenshot(str(CUSTOM_SCREENSHOT))
            urls = requested_urls(driver)

        assert drawn == set(expected)
        # One line per regularized layer (the demo has one) and the total, which
        # is that layer's; in `loss`, train, validation and the validation data loss.
        assert custom == [
            ([("sparsity", "sparsity")], 1),
            ([("penalty", "sparsity")], 1),
            (
                [
                    ("epoch_loss", "train"),
                    ("epoch_loss", "validation"),
                    ("val_data_loss", "sparsity"),
                ],
                3,
            ),
        ]
        network = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
        assert network, "no request reached tensorboard"
        assert {urlsplit(u).netloc for u in network} == {urlsplit(url).netloc}
        assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
