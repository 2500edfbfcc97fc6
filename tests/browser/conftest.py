"""Browser tests: Playwright (sync API) driving Debian's chromium, headless, against the web
app served by uvicorn on a free loopback port, over a database seeded with the sample worklist."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from pacsflow.governance.auth import AuthConfig
from pacsflow.web.sample import SampleSite, build_sample_site
from pacsflow.web.server import serving

CHROMIUM = Path("/usr/bin/chromium")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's chromium with Playwright (needs /usr/bin/chromium)"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SampleSite:
    db = tmp_path_factory.mktemp("browser") / "web.db"
    return build_sample_site(f"sqlite:///{db}", auth=AuthConfig(secret_key="b" * 48))


@pytest.fixture(scope="module")
def base_url(site: SampleSite) -> Iterator[str]:
    with serving(site.app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
