"""``GET {mount}/``: the live dashboard, served by the blueprint, run in a real headless Chromium.

The browser test needs Debian's ``chromium`` (``apt-get install chromium``) and Playwright's
Python package (in the ``test`` extra; its own browser download is not used). Without them it
is skipped locally, and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from _support import HANG, wait_for
from flask import Flask
from werkzeug.serving import make_server

from flask_fennec_cache import CacheAside, FennecCache, RedisCache, cache
from flask_fennec_cache._connect import _memory_servers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Set to a path to keep the screenshot (``docs/dashboard.png`` is made this way).
SCREENSHOT_ENV = "FENNEC_DASHBOARD_SCREENSHOT"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} [CI is set, so this is an error, not a skip]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(params=[True], ids=["fail-open"])
def fail_open(request: pytest.FixtureRequest) -> bool:
    """The app's FENNEC_CACHE_FAIL_OPEN (tests parametrise it indirectly)."""
    value: bool = request.param
    return value


@pytest.fixture
def app(memory_url: str, fail_open: bool) -> Iterator[Flask]:
    app = Flask(f"dash_{uuid.uuid4().hex[:8]}")
    app.config.update(
        FENNEC_CACHE_URL=memory_url,
        FENNEC_CACHE_PREFIX=f"dash-{uuid.uuid4().hex[:8]}:",
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
        FENNEC_CACHE_STATS_FLUSH_INTERVAL=0.2,
        FENNEC_CACHE_FAIL_OPEN=fail_open,
        FENNEC_CACHE_BREAKER_COOLDOWN=0.2,
    )
    FennecCache(app)

    @app.get("/items/<int:n>")
    @cache(ttl=60)
    def item(n: int) -> dict[str, int]:
        return {"n": n}

    yield app
    backend: RedisCache = app.extensions["fennec_cache"]
    backend.close()


# ==================================================================================
# Served by the blueprint (no browser)
# ==================================================================================


def test_the_page_and_its_assets_are_served_by_the_blueprint(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/cache/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    page.close()
    assets = re.findall(r'(?:src|href)="(assets/[^"]+)"', html)
    assert sorted(assets) == ["assets/dashboard.css", "assets/dashboard.js"]
    for asset in assets:
        response = client.get(f"/cache/{asset}")
        assert response.status_code == 200, asset
        response.close()
    assert "http://" not in html and "https://" not in html  # no CDN
    assert client.get("/cache").status_code == 308  # to /cache/, so relative URLs resolve


def test_the_dashboard_is_not_mounted_without_a_prefix(memory_url: str) -> None:
    app = Flask("unmounted")
    app.config.update(FENNEC_CACHE_URL=memory_url)
    FennecCache(app)
    assert app.test_client().get("/").status_code == 404
    app.extensions["fennec_cache"].close()


# ==================================================================================
# In Chromium
# ==================================================================================


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test-server")
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the machine
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()


def showcase_traffic(base: str, seconds: float) -> None:
    """Traffic whose hit rate and volume change over time, for the documentation's screenshot."""
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        phase = int(elapsed // 6)
        distinct = (8, 40, 12, 400)[phase % 4]  # more distinct pages, more misses
        get(f"{base}/items/{1000 * phase + random.randrange(distinct)}")
        sent += 1
        time.sleep(0.004 if phase % 2 else 0.012)


def painted_pixels(page: Any, canvas_id: str, top_half: bool = False) -> int:
    """Pixels drawn on a chart (in its top half only: where the grid and the lines are, above
    the time labels)."""
    count: int = page.evaluate(
        """([id, topHalf]) => {
            const canvas = document.getElementById(id);
            const rows = topHalf ? Math.floor(canvas.height / 2) : canvas.height;
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, rows).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
            return painted;
        }""",
        [canvas_id, top_half],
    )
    return count


def text(page: Any, element_id: str) -> str:
    content: str = page.text_content(f"#{element_id}") or ""
    return content


def test_the_dashboard_shows_live_numbers(
    app: Flask, live_server: str, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 560})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))

    # The page runs under its Content-Security-Policy (no eval): wait with locators, which
    # Playwright evaluates outside the page's world, not with wait_for_function.
    page.goto(f"{live_server}/cache/?interval=250")
    expect(page.locator("#health-status")).to_have_text("healthy")
    assert page.title() == "fennec-cache dashboard"
    assert text(page, "total-requests") == "0"
    assert text(page, "breaker") == "closed"
    blank_chart = painted_pixels(page, "hit-rate-chart")

    # Traffic: 6 distinct pages, 5 times each: 6 misses then 24 hits.
    stop = threading.Event()

    def traffic() -> None:
        # One page in three is new (a miss): the hit rate stays near 67 %, off the chart's
        # gridlines (a 100 % line would be drawn over the top one and paint nothing new).
        rounds = 0
        while not stop.is_set() and rounds < 400:
            page_id = 100 + rounds if rounds % 3 == 0 else rounds % 6
            get(f"{live_server}/items/{page_id}")
            rounds += 1
            stop.wait(0.01)

    for n in range(30):
        get(f"{live_server}/items/{n % 6}")
    expect(page.locator("#total-requests")).to_have_text("30", timeout=10_000)
    assert text(page, "hit-rate-total") == "80.00 %"
    # Drawn with the numbers, even when these reads all fell in one interval (a lone point).
    assert painted_pixels(page, "hit-rate-chart") > blank_chart

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        positive = re.compile(r"^(?:[1-9][\d,]*\.\d|0\.[1-9])$")
        expect(page.locator("#ops")).to_have_text(positive, timeout=10_000)
        expect(page.locator("#hit-rate")).to_have_text(re.compile(r" %$"), timeout=10_000)
        expect(page.locator("#p50")).to_have_text(re.compile(r" ms$"), timeout=10_000)
        more = re.compile(r"^(?!30$)[\d,]+$")
        expect(page.locator("#total-requests")).to_have_text(more, timeout=10_000)
    finally:
        stop.set()
        worker.join()
    assert int(text(page, "total-requests").replace(",", "")) > 30
    assert int(text(page, "round-trips").replace(",", "")) > 0
    for name in ("p50", "p90", "p99"):
        assert re.fullmatch(r"[\d.,]+ ms", text(page, name)), text(page, name)
    assert painted_pixels(page, "hit-rate-chart") > blank_chart
    assert painted_pixels(page, "ops-chart") > 0
    assert console_errors == []

    if os.environ.get(SCREENSHOT_ENV):
        showcase_traffic(live_server, seconds=24)
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])

    # Redis goes away: the page says so (the 503 answers of health are expected here).
    server = _memory_servers[app.config["FENNEC_CACHE_URL"][len("memory://") :].strip("/")]
    server.connected = False
    try:
        expect(page.locator("#health-status")).to_have_text("unhealthy", timeout=10_000)
        expect(page.locator("#health")).to_have_class(re.compile(r"\bunhealthy\b"))
    finally:
        server.connected = True
    page.close()


@pytest.mark.parametrize("fail_open", [False], ids=["fail-closed"], indirect=True)
def test_a_fail_closed_outage_does_not_break_the_page(
    app: Flask, live_server: str, browser: Any
) -> None:
    """Fail-closed, GET stats answers 503 while Redis is away: the page says so, and once Redis
    is back its numbers and charts work again (the outage left no NaN in their history)."""
    page = browser.new_page(viewport={"width": 1280, "height": 560})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{live_server}/cache/?interval=250")
    expect(page.locator("#health-status")).to_have_text("healthy")
    for n in range(12):
        get(f"{live_server}/items/{n % 4}")
    expect(page.locator("#total-requests")).to_have_text("12", timeout=10_000)
    assert painted_pixels(page, "ops-chart", top_half=True) > 0

    server = _memory_servers[app.config["FENNEC_CACHE_URL"][len("memory://") :].strip("/")]
    server.connected = False
    try:
        expect(page.locator("#health-status")).to_have_text("unhealthy", timeout=10_000)
        expect(page.locator("#shared-note")).to_have_text(
            re.compile(r"statistics unavailable"), timeout=10_000
        )
    finally:
        server.connected = True
    expect(page.locator("#health-status")).to_have_text("healthy", timeout=10_000)
    expect(page.locator("#shared-note")).not_to_have_text(re.compile("unavailable"))
    for n in range(8):
        get(f"{live_server}/items/{n % 4}")
    expect(page.locator("#total-requests")).to_have_text("20", timeout=10_000)
    expect(page.locator("#hit-rate-total")).to_have_text("80.00 %")
    # renderCharts() runs in the same tick that showed the new total
    assert painted_pixels(page, "ops-chart", top_half=True) > 0, "the ops chart lost its scale"
    assert page_errors == []
    page.close()


def test_the_dashboard_counts_fail_safe_serves(app: Flask, live_server: str, browser: Any) -> None:
    backend: RedisCache = app.extensions["fennec_cache"]
    aside = CacheAside(backend, ttl=0.1, stale_if_error=300)
    assert aside.get("report", lambda: "numbers") == "numbers"
    assert wait_for(lambda: backend.get("report") is None, timeout=HANG)

    def database_down() -> str:
        raise OSError("the database is down")

    assert aside.get("report", database_down) == "numbers"
    page = browser.new_page(viewport={"width": 1280, "height": 560})
    page.goto(f"{live_server}/cache/?interval=250")
    expect(page.locator("#fail-safe-hits")).to_have_text("1", timeout=10_000)
    page.close()


def test_the_dashboard_shows_names_by_traffic_and_highlights_low_hit_rates(
    app: Flask, live_server: str, browser: Any
) -> None:
    @app.get("/cold/<int:n>")
    @cache(ttl=60)
    def cold(n: int) -> dict[str, int]:
        return {"n": n}

    for n in range(10):
        get(f"{live_server}/items/{n % 2}")  # 2 misses, 8 hits: 80 %, not highlighted
    for n in range(3):
        get(f"{live_server}/cold/{n}")  # misses only
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server}/cache/?interval=250")
    rows = page.locator("#names-body tr")
    expect(rows).to_have_count(2, timeout=10_000)
    assert rows.nth(0).get_attribute("data-name") == "item"  # busiest first
    assert rows.nth(1).get_attribute("data-name") == "cold"
    expect(rows.nth(0).locator("td.rate")).to_have_text("80.0 %")
    expect(rows.nth(1).locator("td.rate")).to_have_text("0.0 %")
    expect(rows.nth(1)).to_have_class(re.compile(r"\blow\b"))
    expect(rows.nth(0)).not_to_have_class(re.compile(r"\blow\b"))
    expect(page.locator("#names-scope")).to_have_text("this process only")  # memory://
    page.close()


def test_an_outage_shows_unknown_rates_not_zero(app: Flask, live_server: str, browser: Any) -> None:
    """Fail-open, GET stats still answers while Redis is away, with this process's counts:
    the page must not show them as everyone's "0 errors/s" or "no reads"."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server}/cache/?interval=250")
    for n in range(6):
        get(f"{live_server}/items/{n % 3}")
    expect(page.locator("#total-requests")).to_have_text("6", timeout=10_000)
    expect(page.locator("#errors-per-s")).to_have_text(re.compile(r"^\d"), timeout=10_000)

    server = _memory_servers[app.config["FENNEC_CACHE_URL"][len("memory://") :].strip("/")]
    server.connected = False
    try:
        get(f"{live_server}/items/1")  # served by the view itself (fail-open)
        for element in ("errors-per-s", "hit-rate", "ops", "reads-per-s"):
            expect(page.locator(f"#{element}")).to_have_text("unknown", timeout=10_000)
        expect(page.locator("#shared-note")).to_have_text(re.compile("this process only"))
        expect(page.locator("#names-scope")).to_have_text(re.compile("this process only"))
        expect(page.locator("#errors-card")).not_to_have_class(re.compile(r"\bfailing\b"))
    finally:
        server.connected = True
    expect(page.locator("#errors-per-s")).to_have_text(re.compile(r"^\d"), timeout=10_000)
    expect(page.locator("#hit-rate")).not_to_have_text("unknown", timeout=10_000)
    page.close()
