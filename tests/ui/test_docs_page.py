"""/docs and /redoc render the API's operations in a headless browser with nothing but the service to reach:
their scripts and styles are the service's own (the fastapi-offline package's), not a CDN's."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from tests.ui.test_explorer import _wait, base_url, browser, models

__all__ = ["base_url", "browser", "models"]  # fixtures used here


def _external_resources(driver: Any, origin: str) -> list[str]:
    urls = driver.execute_script(
        "return [...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)"
    )
    return [u for u in urls if not u.startswith(origin)]


def test_docs_page_renders_every_operation_offline(browser: Any, base_url: str) -> None:
    browser.get(f"{base_url}/docs")
    blocks = _wait(browser, "Swagger UI's operations", lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    paths = {
        b.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text.replace("\u200b", "") for b in blocks
    }
    assert {"/encode", "/reconstruction-error", "/v2/models/{name}/infer", "/admin/reload"} <= paths, paths
    assert not _external_resources(browser, base_url)


def test_redoc_page_renders_offline(browser: Any, base_url: str) -> None:
    browser.get(f"{base_url}/redoc")
    _wait(
        browser,
        "ReDoc's operations",
        lambda d: "reconstruction" in d.find_element(By.TAG_NAME, "body").text.lower(),
    )
    assert not _external_resources(browser, base_url)
