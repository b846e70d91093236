"""`reclmis app` in a real browser (issue 23): headless Chromium loads the page, uploads a sample image, types a
note, presses Segment and sees the overlay. The screenshot is saved next to the test's files, and to
``$RECLMIS_APP_SCREENSHOT`` when set; ``$RECLMIS_APP_CHECKPOINT`` serves a trained checkpoint instead of the
untrained tiny one (docs/app.png: `reclmis train --dataset sample --epochs 25`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="gradio not installed (pip install 'reclmis[app]')")
pytest.importorskip("selenium", reason="selenium not installed (the test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="Chromium and chromedriver not installed (.ci/run: apt-get install chromium "
                                "chromium-driver)")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "reclmis_core" / "sample_data" / "Test_Folder" / "img"
NOTE = "Unilateral pulmonary infection, one infected area, middle left lung."
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    import torch

    import reclmis_core
    from reclmis_core.app import serve
    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model
    from tests.e2e.test_app import _free_port

    root = tmp_path_factory.mktemp("browser")
    ckpt = os.environ.get("RECLMIS_APP_CHECKPOINT")
    if not ckpt:
        torch.manual_seed(0)
        cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
        ckpt = save_checkpoint(build_model(cfg.model, corpus=[NOTE] * 3), cfg, root / "tiny" / "best")
    demo, _, url = serve(reclmis_core.load(ckpt, device="cpu", explain=True), "127.0.0.1", _free_port(),
                         work_dir=root / "work")
    yield url
    demo.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_note_segment_shows_the_overlay(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    image = sorted(SAMPLE.glob("*.png"))[0]
    browser.get(page_url)
    wait = WebDriverWait(browser, 60)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    upload.send_keys(str(image))
    wait.until(ec.text_to_be_present_in_element((By.ID, "upload"), image.stem))  # name and suffix are split
    note = browser.find_element(By.CSS_SELECTOR, "#note textarea")
    note.clear()
    note.send_keys(NOTE)
    browser.find_element(By.ID, "segment").click()
    overlay = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#overlay img")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "summary"), "Lesion area:"))
    assert overlay.size["width"] > 50 and overlay.size["height"] > 50
    assert browser.find_element(By.CSS_SELECTOR, "#wpoi img").is_displayed()
    assert "Traceback" not in browser.page_source
    # no network beyond the server: every script, style, font and image the page loaded came from it
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    origin = page_url.rstrip("/")
    assert loaded and [u for u in loaded if not u.startswith((origin, "data:", "blob:"))] == []
    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("RECLMIS_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["RECLMIS_APP_SCREENSHOT"])
