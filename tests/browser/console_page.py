"""A thin Selenium helper for console pages: go, fill, click, read, wait, screenshot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import DESKTOP, PHONE

WAIT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


class ConsolePage:
    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver: WebDriver = driver
        self.base_url = base_url

    def go(self, path: str) -> ConsolePage:
        self.driver.get(self.base_url + path)
        return self

    @property
    def path(self) -> str:
        return str(self.driver.current_url).removeprefix(self.base_url).split("?")[0]

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def click(self, css: str) -> None:
        self.find(css).click()

    def body(self) -> str:
        return str(self.find("body").text)

    def notice(self) -> str:
        found = self.find_all(".notice[role=status]")
        return str(found[0].text) if found else ""

    def wait_until(self, condition: Any, timeout: float = WAIT_S) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda _: condition())

    def wait_for_path(self, path: str) -> None:
        self.wait_until(lambda: self.path == path)

    def console_problems(self) -> list[str]:
        """What the browser refused (the Content-Security-Policy) or failed to load since the
        last call."""
        entries = self.driver.get_log("browser")  # type: ignore[attr-defined]
        return [e["message"] for e in entries if e["level"] in ("SEVERE", "WARNING")]

    def shoot(self, name: str) -> None:
        """With SLUICEGATE_SCREENSHOTS set, save this page at laptop and phone sizes."""
        directory = os.environ.get("SLUICEGATE_SCREENSHOTS")
        if not directory:
            return
        target = Path(directory) if Path(directory).is_absolute() else ROOT / directory
        target.mkdir(parents=True, exist_ok=True)
        for (width, height), mobile in ((DESKTOP, False), (PHONE, True)):
            self.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            )
            # A page laid out at another width keeps its zoom: start each shot at scale 1.
            self.driver.execute_cdp_cmd("Emulation.setPageScaleFactor", {"pageScaleFactor": 1})  # type: ignore[attr-defined]
            self.driver.execute_script("window.scrollTo(0, 0)")
            self.driver.save_screenshot(str(target / f"{name}-{width}x{height}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]
