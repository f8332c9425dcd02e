"""A real browser for the tests of charlm's pages: headless Chromium driven by Selenium.

Debian's `chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`; .ci/run
installs them) run offline; tools that download a browser of their own cannot work here. A test
that needs the browser skips, saying how to install it, where either is missing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# no window, no GPU, no network of its own: this machine's closed network refuses Chromium's
# background connections many at a time, and a root user needs --no-sandbox
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)


@contextlib.contextmanager
def browser(user_data: Path) -> Iterator[object]:
    """A headless Chromium (a Selenium WebDriver) with a fresh profile in `user_data`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={user_data}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
