"""The web console in headless Chromium (Debian's `chromium` + `chromium-driver`, Selenium),
against a live gateway (uvicorn on a socket, SQLite, the tiny local model).

Every module here sets `pytestmark = pytest.mark.browser`: the default suite deselects them
(pyproject's addopts) and `make test-browser` (run by `.ci/run`, which installs Chromium)
selects them. Without Chromium they skip, and fail under CI=true.

`SLUICEGATE_SCREENSHOTS=docs/screenshots` makes the journey save every page it visits at
1280x800 and 390x844 there (the README shows them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.app import create_app
from tests.api.openai_support import local_model_config, sqlite_gateway
from tests.live import serve_in_thread

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
DESKTOP = (1280, 800)
PHONE = (390, 844)


def _first(paths: tuple[str, ...], env: str) -> str | None:
    chosen = os.environ.get(env)
    if chosen:
        return chosen if Path(chosen).exists() else None
    return next((p for p in paths if Path(p).exists()), shutil.which(Path(paths[0]).name))


@dataclass(frozen=True)
class Chromium:
    binary: str
    driver: str


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    binary = _first(CHROMIUM_PATHS, "SLUICEGATE_CHROMIUM")
    driver = _first(DRIVER_PATHS, "SLUICEGATE_CHROMEDRIVER")
    if binary is None or driver is None:
        message = (
            "headless Chromium is not installed (apt-get install chromium chromium-driver, "
            "or set SLUICEGATE_CHROMIUM / SLUICEGATE_CHROMEDRIVER)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true: the browser tests must run")
        pytest.skip(message)
    return Chromium(binary=binary, driver=driver)


@dataclass(frozen=True)
class LiveConsole:
    url: str
    admin_key: str


@pytest.fixture(scope="module")
def live_console(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[LiveConsole]:
    """A gateway with the tiny model, its own SQLite database and admin key, on a socket."""
    directory = tmp_path_factory.mktemp("console")
    settings, admin_key = sqlite_gateway(directory, local_model_config(tiny_model_dir))
    with serve_in_thread(create_app(settings)) as url:
        yield LiveConsole(url=url, admin_key=admin_key)


@pytest.fixture
def open_browser(chromium: Chromium) -> Iterator[Callable[[], object]]:
    """`open_browser()` starts another headless Chromium (its own profile and cookies)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[webdriver.Chrome] = []

    def start() -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium.binary
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land here
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromium.driver))
        driver.set_page_load_timeout(60)
        driver.implicitly_wait(5)  # a clicked form's next page may still be loading
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()
