"""The playground in a real browser (headless Chromium, tests/browser.py): it loads offline,
streams a completion as it is made, stops it, and colours a scored text with the top
predictions on hover.

The screenshots go to the test's folder; with CHARLM_DOCS_SCREENSHOTS=1 into docs/ (what
docs/serve.md shows), and CHARLM_SCREENSHOT_RUN=FOLDER serves that run instead of a tiny
random model (a trained one makes a better picture)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.browser import browser, needs_browser
from tests.conftest import ROOT, TEXT
from tests.serving import call, serving, tiny_run


def until(predicate, seconds: float = 20, every: float = 0.02):
    """The first true value of `predicate()` within `seconds` (else fail)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {seconds} s")


@needs_browser
def test_the_playground_streams_stops_and_scores_in_a_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    run = os.environ.get("CHARLM_SCREENSHOT_RUN") or str(tiny_run(tmp_path / "tiny"))
    shots = ROOT / "docs" if os.environ.get("CHARLM_DOCS_SCREENSHOTS") else tmp_path
    args = (run, "--threads", "1", "--max-tokens", "100000")
    with serving(*args) as server, browser(tmp_path / "profile") as driver:
        driver.set_window_size(1100, 820)
        driver.get(server.url + "/")
        el = driver.find_element
        until(lambda: el(By.CSS_SELECTOR, "#model option"))
        prefix = el(By.ID, "prefix")
        prefix.clear()
        prefix.send_keys("First Citizen:")
        for name, value in (("length", "100000"), ("seed", "7"), ("temperature", "0.8")):
            el(By.ID, name).clear()
            el(By.ID, name).send_keys(value)
        el(By.ID, "generate").click()
        # characters appear while it is still generating: streamed, not all at the end
        seen = until(lambda: len(el(By.ID, "gen").text) > 20 and el(By.ID, "gen").text)
        assert (
            "generating" in el(By.ID, "gen-status").text
            or "characters/s" in el(By.ID, "gen-status").text
        )
        until(lambda: len(el(By.ID, "gen").text) > len(seen) + 20)  # and it goes on
        assert json.loads(call(server.url + "/health")[2])["streams"] == 1
        el(By.ID, "stop").click()
        until(lambda: "stopped after" in el(By.ID, "gen-status").text)
        until(lambda: json.loads(call(server.url + "/health")[2])["streams"] == 0, 5)
        assert el(By.ID, "shown-prefix").text == "First Citizen:"
        # a shorter one to show: it finishes by itself
        el(By.ID, "length").clear()
        el(By.ID, "length").send_keys("600")
        el(By.ID, "generate").click()
        until(lambda: "finished: length" in el(By.ID, "gen-status").text)
        assert len(el(By.ID, "gen").get_property("textContent")) == 600
        driver.save_screenshot(str(shots / "serve-playground.png"))

        el(By.ID, "tab-score").click()
        text = TEXT[:420]
        driver.execute_script("arguments[0].value = arguments[1]", el(By.ID, "score-text"), text)
        el(By.ID, "score").click()
        spans = until(lambda: driver.find_elements(By.CSS_SELECTOR, "#scored #text span"))
        assert len(spans) == len(text)
        assert float(el(By.ID, "bpc").text) > 0
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", el(By.ID, "scored"))
        hovered = spans[len(text) // 2]
        assert hovered.get_attribute("class").startswith("b")  # coloured by its bin
        ActionChains(driver).move_to_element(hovered).perform()
        tip = until(lambda: el(By.ID, "tip").is_displayed() and el(By.ID, "tip"))
        assert "bits" in tip.text and "%" in tip.text  # its top predictions
        driver.save_screenshot(str(shots / "serve-score.png"))
