"""The dashboard in a real browser: headless Chromium driven through chromedriver (Debian's
`chromium` and `chromium-driver`) by Selenium, against the real admin listener (the uvicorn
server `serve` starts, on a free loopback port) on seeded SQLite.

Skipped, with the reason, when Selenium, Chromium or chromedriver is missing.
Set CARDIAC_CDS_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the README's picture.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.dashboard.listener import AdminListener
from service.storage.store import Storage
from tests.conftest import settings_in
from tests.dashboard.conftest import (
    PASSWORD,
    PRIOR_AUTH,
    SECRETS,
    USERNAME,
    admin_section,
    make_backtest_dir,
    seed,
)
from tests.storage.conftest import unused_loopback_port

NOVEMBER = "since=2026-11-01&until=2026-11-30"
CHARTS = ("timeline", "overrideRate", "topics", "overrideReasons", "payerProfiles", "backtest")
WAIT_SECONDS = 30


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} not found (Debian: apt-get install chromium chromium-driver)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@dataclass
class Served:
    base: str  # http://127.0.0.1:port
    downloads: Path

    def url(self, path: str, *, credentials: bool = False) -> str:
        if not credentials:
            return f"{self.base}{path}"
        user, password = quote(USERNAME, safe=""), quote(PASSWORD, safe="")
        return self.base.replace("http://", f"http://{user}:{password}@") + path

    def json(self, query: str) -> dict[str, Any]:
        response = httpx.get(
            self.url(f"/dashboard/data.json?{query}"), auth=(USERNAME, PASSWORD), timeout=10
        )
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = settings_in(
        tmp_path,
        admin=admin_section(
            port=unused_loopback_port(), backtest_dir=str(make_backtest_dir(tmp_path))
        ),
    )
    store = Storage(settings.storage.url)
    store.ensure_schema()
    seed(store)
    store.dispose()
    listener = AdminListener(settings)
    listener.start()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        yield Served(f"http://127.0.0.1:{listener.port}", downloads)
    finally:
        listener.stop()


@pytest.fixture
def driver(served: Served) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(served.downloads),
            "download.prompt_for_download": False,
        },
    )
    browser = webdriver.Chrome(
        options=options, service=Service(executable_path=str(shutil.which("chromedriver")))
    )
    browser.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield browser
    finally:
        browser.quit()


def wait_for_charts(browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda b: b.execute_script("return document.body.getAttribute('data-charts')")
    )
    state = browser.execute_script("return document.body.getAttribute('data-charts')")
    assert state == "ready", state


def rendered_traces(browser: Any) -> dict[str, tuple[int, int]]:
    """Per chart: plotly's SVG layers, and the trace groups drawn in them."""
    found: dict[str, list[int]] = browser.execute_script(
        """
        const result = {};
        for (const element of document.querySelectorAll('[data-figure]')) {
          result[element.getAttribute('data-figure')] = [
            element.querySelectorAll('svg.main-svg').length,
            element.querySelectorAll('.cartesianlayer g.trace').length,
          ];
        }
        return result;
        """
    )
    return {name: (svg, traces) for name, (svg, traces) in found.items()}


def totals(browser: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {
        key: browser.find_element(By.ID, f"total-{key}").text
        for key in ("fires", "issued", "accepted", "overridden", "ignored", "silent")
    }


def wait_for_download(directory: Path, prefix: str) -> Path:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        done = [p for p in directory.glob(f"{prefix}*.csv") if p.stat().st_size > 0]
        if done and not list(directory.glob("*.crdownload")):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no {prefix}*.csv downloaded into {directory}")


def test_the_dashboard_in_a_real_browser(served: Served, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # Basic credentials in the first URL: Chromium keeps them for the origin's later requests
    # (scripts, the filter form, the CSV download).
    driver.get(served.url(f"/dashboard?{NOVEMBER}", credentials=True))
    wait_for_charts(driver)
    assert driver.title == "Cardiac CT CDS: rule owners' dashboard"

    traces = rendered_traces(driver)
    assert set(traces) == set(CHARTS)
    for name, (svg, drawn) in traces.items():
        assert svg > 0 and drawn > 0, f"chart {name} not drawn: {traces}"

    live = served.json(NOVEMBER)
    before = totals(driver)
    assert before == {k: str(live["total"][k]) for k in before}
    assert before["fires"] == "8"
    topic_rows = driver.find_elements(By.CSS_SELECTOR, "#table-topics tbody tr")
    assert len(topic_rows) == len(live["tables"]["topics"]) == 3

    # The CSV link downloads the same table data.json gives.
    driver.find_element(By.CSS_SELECTOR, 'a[data-csv="topics"]').click()
    downloaded = wait_for_download(served.downloads, "topics_2026-11-01_2026-11-30")
    rows = list(csv.DictReader(io.StringIO(downloaded.read_text(encoding="utf-8"))))
    assert rows == [
        {k: "" if v is None else str(v) for k, v in row.items()} for row in live["tables"]["topics"]
    ]

    # A filter: one topic, daily buckets, through the form as a person would.
    Select(driver.find_element(By.NAME, "topic")).select_by_value(PRIOR_AUTH)
    Select(driver.find_element(By.NAME, "bucket")).select_by_value("day")
    old_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "apply").click()
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda b: old_page != b.find_element(By.TAG_NAME, "html")
    )
    wait_for_charts(driver)
    assert f"topic={PRIOR_AUTH}" in driver.current_url and "bucket=day" in driver.current_url
    after = totals(driver)
    filtered = served.json(f"{NOVEMBER}&topic={PRIOR_AUTH}&bucket=day")
    assert after == {k: str(filtered["total"][k]) for k in after}
    assert after["fires"] == "2" and after != before
    assert [
        r.get_attribute("data-key")
        for r in driver.find_elements(By.CSS_SELECTOR, "#table-topics tbody tr")
    ] == [PRIOR_AUTH]

    problems = [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] in ("SEVERE", "WARNING") or "Content Security Policy" in entry["message"]
    ]
    assert problems == []
    assert not any(secret in driver.page_source for secret in SECRETS)

    # The whole first view, for the eye (and, on request, for the README).
    driver.get(served.url(f"/dashboard?{NOVEMBER}"))
    wait_for_charts(driver)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height), 6000))
    time.sleep(0.5)  # responsive plots settle to the new width
    screenshot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if target := os.environ.get("CARDIAC_CDS_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(screenshot, target)
