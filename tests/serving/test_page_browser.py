"""The page at / in a real headless Chromium (Playwright): choose photos, see each with its label and P(cat)."""

import shutil

import pytest
from helpers import Server, make_tiny_config

from catdog_lightning import load_classifier
from catdog_lightning.training import train

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")


def test_dropping_photos_on_the_page_shows_their_labels_and_bars(tiny_dataset, tmp_path):
    metrics = train(make_tiny_config(tiny_dataset, tmp_path))
    photos = sorted((tiny_dataset / "test").rglob("*.jpg"))[:3]
    predicted = load_classifier(metrics["best_checkpoint"]).predict(photos)
    expected = {p.name: r for p, r in zip(photos, predicted, strict=True)}
    server = Server(metrics["best_checkpoint"])
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            page = browser.new_page()
            page.goto(server.url)
            page.wait_for_function("document.getElementById('model').textContent.includes('mlp')")
            page.set_input_files("#files", [str(p) for p in photos])
            page.wait_for_function("document.querySelectorAll('.photo .label').length === 3", timeout=60_000)
            rows = page.eval_on_selector_all(
                ".photo", "rows => rows.map(r => [r.innerText, r.querySelector('.bar span').style.width])"
            )
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        server.stop()
    assert len(rows) == 3
    for text, width in rows:
        label, p_cat = text.split()[0], float(text.split("= ")[1].split()[0])
        match = [e for e in expected.values() if abs(e.p_cat - p_cat) < 1e-3]
        assert match and match[0].label == label
        assert abs(float(width.rstrip("%")) - 100 * p_cat) < 0.1
