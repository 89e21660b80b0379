"""The model explorer page, end to end: the real service, the real page, a real headless Chromium.

The service runs as a subprocess on the shipped `models/` repository (or `AE_UI_MODELS_DIR`). Screenshots go
to `artifacts/ui/`; with `AE_UI_DOCS_SCREENSHOTS=1` they are also copied to `docs/img/` for the README.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import FIXTURE_MODELS, SHIPPED_MODELS
from tests.fixtures.make_shaped import SHAPED_MODELS
from tests.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("AE_UI_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("AE_UI_CHROMEDRIVER", "/usr/bin/chromedriver"))
MODELS_DIR = Path(os.environ.get("AE_UI_MODELS_DIR", SHIPPED_MODELS))
ARTIFACTS = ROOT / "artifacts" / "ui"
DOCS_IMG = ROOT / "docs" / "img"
WAIT_S = 20.0

pytestmark = pytest.mark.timeout(240)


def _shipped_models() -> dict[str, dict[str, Any]]:
    """Latest metadata per model name in the repository the service is started on."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(MODELS_DIR.glob("*/*/metadata.json")):
        meta = json.loads(path.read_text())
        if meta["name"] not in latest or meta["version"] > latest[meta["name"]]["version"]:
            latest[meta["name"]] = meta
    return latest


def _post(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Any]]:
    found = _shipped_models()
    if not found:
        pytest.fail(
            f"no models under {MODELS_DIR}: train and export the shipped ones (or set AE_UI_MODELS_DIR)"
        )
    return found


@contextlib.contextmanager
def _serve(models_dir: Path = MODELS_DIR, **env: str) -> Iterator[str]:
    """Run `python -m service` on `models_dir` until the block ends; yield its base URL."""
    # Keys from the calling environment would lock the page out; a test that wants them passes AE_API_KEYS.
    with LiveServer(models_dir, env={"AE_API_KEYS": None, "AE_API_KEYS_FILE": None, **env}) as server:
        yield server.url


@pytest.fixture(scope="module")
def base_url(models: dict[str, dict[str, Any]]) -> Iterator[str]:
    with _serve() as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"headless browser not installed: {', '.join(missing)} missing "
            "(apt-get install chromium chromium-driver, as .ci/run does)"
        )
    profile = tempfile.mkdtemp(prefix="ae-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: WebDriver, what: str, condition: Any) -> Any:
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d))
    except Exception as exc:
        _screenshot(driver, "failure")
        message = f"timed out after {WAIT_S:.0f} s waiting for {what}; see artifacts/ui/failure.png"
        raise AssertionError(message) from exc


def _screenshot(driver: WebDriver, name: str, docs_name: str | None = None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 140, 4000))
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if docs_name and os.environ.get("AE_UI_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        # A 256-colour palette keeps the committed images small (~90 kB, not ~250 kB) at no visible cost.
        with Image.open(path) as shot:
            palette = shot.convert("RGB").quantize(
                256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE
            )
            palette.save(DOCS_IMG / docs_name, optimize=True)
    return path


def _severe_console_entries(driver: webdriver.Chrome) -> list[str]:
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [f"{e['level']}: {e['message']}" for e in entries if e["level"] == "SEVERE"]


def _canvas_contrast(driver: WebDriver, element_id: str) -> float:
    """Luminance range (0..255) over the canvas' pixels; 0 for a blank or uniform canvas."""
    value = driver.execute_script(
        """
        const c = document.getElementById(arguments[0]);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lo = 255, hi = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] === 0) continue;
          const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
          lo = Math.min(lo, y); hi = Math.max(hi, y);
        }
        return hi >= lo ? hi - lo : 0;
        """,
        element_id,
    )
    return float(value)


def _choose_model(driver: WebDriver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#models-body tr[data-model="{name}"]').click()
    _wait(
        driver,
        f"the explorer to show {name}",
        lambda d: d.find_element(By.ID, "explorer").get_attribute("data-model") == name,
    )


def _settled_input(driver: WebDriver, previous: list[float] | None) -> list[float]:
    """Wait until the page has scored a new input and has nothing more in flight; return that input."""

    def ready(d: WebDriver) -> Any:
        state = d.execute_script("return {input: window.explorer.lastInput, busy: window.explorer.busy}")
        if state["busy"] or state["input"] is None or state["input"] == previous:
            return False
        return state["input"]

    result: list[float] = _wait(driver, "the page to score its input", ready)
    return result


def _draw_zero(driver: WebDriver, canvas: WebElement) -> None:
    """Trace an upright ellipse, the way a person draws a 0, with real pointer events."""
    # Pointer actions address the viewport: bring the whole canvas into it first.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    size = canvas.size
    rx, ry = size["width"] * 0.24, size["height"] * 0.36
    angles = [2 * math.pi * k / 28 for k in range(29)]
    points = [(round(rx * math.sin(a)), round(-ry * math.cos(a))) for a in angles]
    actions = ActionChains(driver, duration=10)
    actions.move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for x, y in points[1:]:
        actions.move_to_element_with_offset(canvas, x, y)
    actions.release().perform()


def _page_score(driver: WebDriver) -> tuple[float, str]:
    score = driver.find_element(By.ID, "score-value").get_attribute("data-score")
    flag = driver.find_element(By.ID, "anomaly-flag").get_attribute("data-anomaly")
    assert score is not None and flag in {"true", "false"}, (score, flag)
    return float(score), flag


def test_explorer_lists_models_and_scores_drawing_then_noise(
    browser: webdriver.Chrome, base_url: str, models: dict[str, dict[str, Any]]
) -> None:
    browser.get(base_url + "/")
    assert browser.current_url.startswith(base_url + "/ui/"), browser.current_url
    _wait(
        browser,
        "the model table",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#models-body tr")) >= len(models),
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#models-body tr")
    assert {r.get_attribute("data-model") for r in rows} == set(models)
    for row in rows:
        meta = models[str(row.get_attribute("data-model"))]
        assert meta["variant"] in row.text, row.text
        assert f"{meta['input_dim']} → {meta['latent_dim']}" in row.text, row.text
        assert "ready" in row.text, row.text

    image_models = sorted(n for n, m in models.items() if m.get("image"))
    assert image_models, "no image-shaped model among the shipped ones"
    name = next((n for n in image_models if n.endswith("-plain")), image_models[0])
    _choose_model(browser, name)

    _draw_zero(browser, browser.find_element(By.ID, "draw-canvas"))
    drawn = _settled_input(browser, None)
    assert len(drawn) == models[name]["input_dim"]
    assert _canvas_contrast(browser, "recon-canvas") > 40, "the reconstruction canvas is blank"
    assert _canvas_contrast(browser, "code-canvas") > 40, "the code chart is blank"
    assert _canvas_contrast(browser, "calib-canvas") > 40, "the calibration chart is blank"
    score, flag = _page_score(browser)
    # The page shows what the public API says about exactly the input it sent.
    direct = _post(base_url, "/reconstruction-error", {"model": name, "inputs": [drawn]})
    assert math.isclose(score, direct["errors"][0], rel_tol=1e-5, abs_tol=1e-9), (score, direct)
    assert flag == str(direct["anomalies"][0]).lower()
    assert flag == "false", f"a drawn 0 was flagged as an anomaly by {name} (score {score}, {direct})"
    _screenshot(browser, "explorer-drawn", docs_name="explorer.png")

    browser.find_element(By.ID, "noise-fill-btn").click()
    noisy = _settled_input(browser, drawn)
    noise_score, noise_flag = _page_score(browser)
    assert noise_flag == "true", f"uniform noise was not flagged (score {noise_score}, drawn digit {score})"
    assert noise_score > score
    assert _post(base_url, "/reconstruction-error", {"model": name, "inputs": [noisy]})["anomalies"] == [True]
    _screenshot(browser, "explorer-noise", docs_name="explorer-noise.png")

    severe = _severe_console_entries(browser)
    assert not severe, "console errors:\n" + "\n".join(severe)


def test_explorer_draws_vae_samples(
    browser: webdriver.Chrome, base_url: str, models: dict[str, dict[str, Any]]
) -> None:
    generative = sorted(n for n, m in models.items() if m.get("generative") and m.get("image"))
    assert generative, "no generative image model among the shipped ones"
    browser.get(base_url + "/ui/")
    _wait(browser, "the model table", lambda d: d.find_elements(By.CSS_SELECTOR, "#models-body tr"))
    _choose_model(browser, generative[0])
    if [models[generative[0]]["image"][k] for k in ("height", "width")] == [8, 8]:
        browser.find_element(By.ID, "example-btn").click()
        _settled_input(browser, None)
    n = 12
    field = browser.find_element(By.ID, "sample-n")
    field.clear()
    field.send_keys(str(n))
    browser.find_element(By.ID, "sample-btn").click()
    _wait(browser, "the samples", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples canvas")) == n)
    contrasts = browser.execute_script(
        """
        return [...document.querySelectorAll('#samples canvas')].map((c) => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let lo = 255, hi = 0;
          for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
          return hi - lo;
        });
        """
    )
    assert all(c > 40 for c in contrasts), contrasts
    _screenshot(browser, "explorer-vae", docs_name="explorer-vae.png")
    severe = _severe_console_entries(browser)
    assert not severe, "console errors:\n" + "\n".join(severe)


def test_explorer_asks_for_api_key_and_uses_it(
    browser: webdriver.Chrome, models: dict[str, dict[str, Any]]
) -> None:
    key = "explorer-test-key-7f3a"
    _severe_console_entries(browser)  # drop what earlier pages logged
    with _serve(AE_API_KEYS=key) as url:
        try:
            with urllib.request.urlopen(url + "/models", timeout=10):
                pytest.fail("the service answered /models without a key although AE_API_KEYS was set")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401, exc
        browser.get(url + "/")
        banner = browser.find_element(By.ID, "auth-banner")
        _wait(browser, "the 401 banner", lambda d: banner.is_displayed() and "401" in banner.text)
        assert not browser.find_elements(By.CSS_SELECTOR, "#models-body tr")

        field = browser.find_element(By.ID, "api-key")
        field.send_keys("not-the-key")
        browser.find_element(By.ID, "key-save").click()
        _wait(browser, "the 403 banner", lambda d: banner.is_displayed() and "403" in banner.text)

        field.clear()
        field.send_keys(key)
        browser.find_element(By.ID, "key-save").click()
        _wait(
            browser,
            "the model table after the key was given",
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#models-body tr")) >= len(models),
        )
        assert not banner.is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('ae-explorer-api-key')") == key
        # The scoring requests carry the key too.
        browser.find_element(By.ID, "clear-btn").click()
        browser.find_element(By.ID, "noise-fill-btn").click()
        _settled_input(browser, None)
        assert _page_score(browser)[1] == "true"
        _screenshot(browser, "explorer-api-key")

        # The refused /models calls are the only errors the browser may log.
        severe = _severe_console_entries(browser)
        unexpected = [e for e in severe if not re.search(r"/models - .*status of 40[13]", e)]
        assert len(severe) == 2 and not unexpected, "console errors:\n" + "\n".join(severe)
        browser.execute_script("sessionStorage.clear()")


@pytest.fixture(scope="module")
def tabular_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tiny fixture model, declared tabular: every shipped model is an image model."""
    source = FIXTURE_MODELS / "tiny" / "1"
    target = tmp_path_factory.mktemp("models") / "tiny-tabular" / "1"
    shutil.copytree(source, target)
    meta = json.loads((target / "metadata.json").read_text())
    meta.update(name="tiny-tabular", kind="rows", image=None)
    (target / "metadata.json").write_text(json.dumps(meta))
    return target.parent.parent


def test_explorer_scores_csv_rows_for_tabular_model(
    browser: webdriver.Chrome, tabular_models_dir: Path
) -> None:
    meta = json.loads((tabular_models_dir / "tiny-tabular" / "1" / "metadata.json").read_text())
    offset = meta["normalisation"]["offset"]
    rows = [offset, [v + 0.5 for v in offset], [v + 1000.0 for v in offset]]
    csv = "a,b,c,d\n" + "\n".join(", ".join(f"{v:.4f}" for v in row) for row in rows)
    _severe_console_entries(browser)  # drop what earlier pages logged
    with _serve(tabular_models_dir) as url:
        browser.get(url + "/ui/")
        _wait(browser, "the tabular panel", lambda d: d.find_element(By.ID, "tabular-panel").is_displayed())
        assert not browser.find_element(By.ID, "image-panel").is_displayed()
        browser.find_element(By.ID, "csv-input").send_keys(csv)
        browser.find_element(By.ID, "csv-score-btn").click()
        _wait(
            browser, "the scored rows", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows-body tr")) == 3
        )

        sent = [[float(f"{v:.4f}") for v in row] for row in rows]
        direct = _post(url, "/reconstruction-error", {"model": "tiny-tabular", "inputs": sent})
        shown = browser.find_elements(By.CSS_SELECTOR, "#rows-body tr")
        assert [r.get_attribute("data-anomaly") for r in shown] == [
            str(a).lower() for a in direct["anomalies"]
        ]
        assert shown[2].get_attribute("data-anomaly") == "true", "a row 1000 above the mean was not flagged"
        shown[2].click()
        _wait(
            browser,
            "row 3's feature errors",
            lambda d: "row 3" in d.find_element(By.ID, "feature-row-label").text,
        )
        assert _canvas_contrast(browser, "feature-canvas") > 40, "the per-feature error chart is blank"
        _screenshot(browser, "explorer-tabular", docs_name="explorer-tabular.png")

        # A row of the wrong length is refused on the page, with the reason, before anything is sent.
        csv_field = browser.find_element(By.ID, "csv-input")
        csv_field.clear()
        csv_field.send_keys("1, 2, 3")
        browser.find_element(By.ID, "csv-score-btn").click()
        error = browser.find_element(By.ID, "error-banner")
        _wait(browser, "the row-length error", lambda d: error.is_displayed())
        assert "expects 4 per row" in error.text, error.text

    severe = _severe_console_entries(browser)
    assert not severe, "console errors:\n" + "\n".join(severe)


@pytest.fixture(scope="module")
def large_image_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conv2d denoising model of 28x28 images (MNIST's size), trained here on digits scaled up to it."""
    from sklearn.datasets import load_digits

    from training.artifact import train_version
    from training.config import TrainConfig
    from training.data import Dataset

    digits = load_digits().data[:300].reshape(-1, 8, 8)
    images = np.zeros((300, 1, 28, 28), np.float32)
    images[:, 0, 2:26, 2:26] = np.kron(digits, np.ones((3, 3))) * 255.0 / 16.0  # grey levels 0..255
    out = tmp_path_factory.mktemp("models")
    config = TrainConfig(variant="denoising", architecture="conv2d", hidden=(4, 8), steps=150)
    train_version(
        config, Dataset.of_images(images, "digits at 28x28"), out, "digits28-denoising", progress=False
    )
    return out


def _canvas_values(driver: WebDriver, element_id: str) -> list[float]:
    text = driver.find_element(By.ID, element_id).get_attribute("data-values")
    assert text, f"#{element_id} shows no values"
    values: list[float] = json.loads(text)
    return values


def test_explorer_image_view_draws_at_the_models_resolution(
    browser: webdriver.Chrome, large_image_models_dir: Path
) -> None:
    name = "digits28-denoising"
    _severe_console_entries(browser)  # drop what earlier pages logged
    with _serve(large_image_models_dir) as url:
        browser.get(url + "/ui/")
        _wait(browser, "the model table", lambda d: d.find_elements(By.CSS_SELECTOR, "#models-body tr"))
        _choose_model(browser, name)
        summary = browser.find_element(By.ID, "explorer-summary").text
        # The image's size and pixel range, as GET /models gives them.
        assert "28\u00d728 images" in summary and "to 255" in summary, summary
        assert browser.find_element(By.ID, "input-shape").text == "28\u00d728"
        # Each canvas that shows one image holds a whole number of canvas pixels per model pixel.
        for canvas_id in ("input-canvas", "recon-canvas", "errmap-canvas"):
            size = browser.execute_script(
                "const c = document.getElementById(arguments[0]); return [c.width, c.height];", canvas_id
            )
            assert size[0] == size[1] and size[0] % 28 == 0 and size[0] >= 28, (canvas_id, size)

        _draw_zero(browser, browser.find_element(By.ID, "draw-canvas"))
        clean = _settled_input(browser, None)
        assert len(clean) == 28 * 28 and max(clean) > 128 and min(clean) == 0.0
        browser.execute_script(
            "const s = document.getElementById('noise-slider'); s.value = '0.3';"
            "s.dispatchEvent(new Event('input'));"
        )
        noisy = _settled_input(browser, clean)
        assert noisy != clean and all(0.0 <= v <= 255.0 for v in noisy)
        assert _canvas_values(browser, "input-canvas") == noisy
        assert _canvas_contrast(browser, "input-canvas") > 40, "the noisy input canvas is blank"
        assert _canvas_contrast(browser, "errmap-canvas") > 40, "the error map is blank"

        # Denoised image and error map are the service's answers for the image it was sent, in its shape.
        image = np.asarray(noisy).reshape(28, 28).tolist()
        denoised = _post(url, "/denoise", {"model": name, "inputs": [image]})["outputs"]
        errors = _post(url, "/reconstruction-error", {"model": name, "inputs": [image], "per_feature": True})
        assert np.shape(denoised) == np.shape(errors["feature_errors"]) == (1, 28, 28)
        np.testing.assert_allclose(_canvas_values(browser, "recon-canvas"), np.ravel(denoised), rtol=1e-5)
        np.testing.assert_allclose(
            _canvas_values(browser, "errmap-canvas"), np.ravel(errors["feature_errors"]), rtol=1e-5, atol=1e-9
        )
        score, _ = _page_score(browser)
        assert math.isclose(score, errors["errors"][0], rel_tol=1e-5, abs_tol=1e-9)
        _screenshot(browser, "explorer-28x28")

    severe = _severe_console_entries(browser)
    assert not severe, "console errors:\n" + "\n".join(severe)


def _series_csv(
    offset: list[float], channels: int, steps: int, spike: range
) -> tuple[str, list[list[float]]]:
    """A flat series at the training mean, with a large spike on the first channel over `spike`."""
    values = [
        [offset[c] + (40.0 if c == 0 and t in spike else 0.0) for c in range(channels)] for t in range(steps)
    ]
    lines = ["t,temp,flow"] + [f"{t},{row[1]:.4f},{row[0]:.4f}" for t, row in enumerate(values)]
    return "\n".join(lines), [[round(v, 4) for v in row] for row in values]


def test_explorer_scores_a_series_and_shows_its_flagged_spans(browser: webdriver.Chrome) -> None:
    meta = json.loads((SHAPED_MODELS / "tiny-series" / "1" / "metadata.json").read_text())
    channels = meta["series"]["channels"]
    # Columns in another order than the model's, and a time column: the page sends records keyed by name.
    csv, values = _series_csv(meta["normalisation"]["offset"], channels, 40, range(20, 24))
    _severe_console_entries(browser)
    with _serve(SHAPED_MODELS) as url:
        browser.get(url + "/ui/#model=tiny-series")
        _wait(browser, "the series panel", lambda d: d.find_element(By.ID, "series-panel").is_displayed())
        assert not browser.find_element(By.ID, "tabular-panel").is_displayed()
        browser.find_element(By.ID, "series-input").send_keys(csv)
        browser.find_element(By.ID, "series-score-btn").click()
        _wait(browser, "the step scores", lambda d: "steps" in d.find_element(By.ID, "series-status").text)

        direct = _post(url, "/reconstruction-error", {"model": "tiny-series", "inputs": values})
        flagged = sum(direct["anomalies"])
        assert flagged, "the spike was not flagged by the service itself"
        status = browser.find_element(By.ID, "series-status").text
        assert status.startswith(f"40 steps, {flagged} flagged"), status
        spans = browser.find_elements(By.CSS_SELECTOR, "#spans-body tr")
        runs = [
            i for i, a in enumerate(direct["anomalies"]) if a and (i == 0 or not direct["anomalies"][i - 1])
        ]
        assert len(spans) == len(runs)
        for name in ("series-canvas", "step-canvas"):
            assert _canvas_contrast(browser, name) > 40, f"{name} is blank"
        # The page opens on the first flagged step; a span picks its peak and shows its channel errors.
        spans[-1].click()
        selected = browser.execute_script("return window.explorer.seriesSelected")
        assert direct["anomalies"][selected], selected
        _wait(
            browser,
            "the step's channel errors",
            lambda d: "score" in d.find_element(By.ID, "step-label").text,
        )
        assert _canvas_contrast(browser, "channel-canvas") > 40, "the per-channel error chart is blank"
        _screenshot(browser, "explorer-series", docs_name="explorer-series.png")

        # A column the model does not have is the service's 422, shown with its reason.
        field = browser.find_element(By.ID, "series-input")
        field.clear()
        field.send_keys("t,flow,pressure\n0,1,2\n1,1,2\n2,1,2\n3,1,2")
        browser.find_element(By.ID, "series-score-btn").click()
        error = browser.find_element(By.ID, "error-banner")
        _wait(browser, "the column error", lambda d: error.is_displayed())
        assert "422" in error.text and "pressure" in error.text, error.text
        logged = _severe_console_entries(browser)
        assert all("422" in entry for entry in logged), logged

        # The synthetic example scores without an error.
        browser.find_element(By.ID, "series-example-btn").click()
        _wait(
            browser,
            "the example",
            lambda d: (
                "steps" in d.find_element(By.ID, "series-status").text
                and not d.find_element(By.ID, "error-banner").is_displayed()
            ),
        )
    severe = _severe_console_entries(browser)
    assert not severe, "console errors:\n" + "\n".join(severe)


def test_explorer_sends_named_columns_as_records(browser: webdriver.Chrome) -> None:
    meta = json.loads((SHAPED_MODELS / "tiny-named" / "1" / "metadata.json").read_text())
    names = meta["feature_names"]
    offset = meta["normalisation"]["offset"]
    rows = [offset, [v + 1000.0 for v in offset]]
    # The header lists the columns reversed: records keyed by name put them back in the model's order.
    csv = (
        ",".join(reversed(names)) + "\n" + "\n".join(",".join(f"{v:.4f}" for v in reversed(r)) for r in rows)
    )
    _severe_console_entries(browser)
    with _serve(SHAPED_MODELS) as url:
        browser.get(url + "/ui/#model=tiny-named")
        _wait(browser, "the tabular panel", lambda d: d.find_element(By.ID, "tabular-panel").is_displayed())
        browser.find_element(By.ID, "csv-input").send_keys(csv)
        browser.find_element(By.ID, "csv-score-btn").click()
        _wait(browser, "the rows", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows-body tr")) == 2)
        sent = [[float(f"{v:.4f}") for v in row] for row in rows]
        direct = _post(
            url, "/reconstruction-error", {"model": "tiny-named", "inputs": sent, "per_feature": True}
        )
        shown = browser.find_elements(By.CSS_SELECTOR, "#rows-body tr")
        assert [r.get_attribute("data-anomaly") for r in shown] == [
            str(a).lower() for a in direct["anomalies"]
        ]
        assert direct["anomalies"][1] and direct["top_features"][1]
        worst = shown[1].find_element(By.CSS_SELECTOR, ".top-features").text
        assert worst.startswith(direct["top_features"][1][0][0]), worst
    severe = _severe_console_entries(browser)
    assert not severe, "console errors:\n" + "\n".join(severe)
