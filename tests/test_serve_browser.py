"""The web page in a real browser: headless Chromium types, clicks Translate, sees the heatmap.

Needs Playwright (``pip install playwright``; its own browser download is not used) and
Debian's Chromium (``apt-get install chromium``); without them the test is skipped and
says which one is missing. The page may only talk to the service it came from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_ensemble import trained_checkpoint

pytest.importorskip(
    "fastapi", reason="the service needs the serve extra: pip install -e '.[serve]'"
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs Playwright: pip install playwright"
)

from test_serve import ServerThread  # noqa: E402

from mtkit.search.translator import Translator  # noqa: E402
from mtkit.serve.app import create_app  # noqa: E402
from mtkit.serve.setup import ServeSettings, load_model  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium ($MTKIT_CHROMIUM overrides), or None."""
    for candidate in (os.environ.get("MTKIT_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def test_translate_in_the_browser_shows_text_nbest_and_heatmap(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set MTKIT_CHROMIUM)")
    checkpoint = trained_checkpoint(tmp_path_factory, seed=1)
    translator = Translator.from_checkpoint(checkpoint)
    lines = ["red cat sleeps near the house", "a big dog"]
    expected = translator.translate_nbest(lines, beam_size=3, nbest=3, return_attention=True)
    app = create_app(load_model([checkpoint]), ServeSettings(max_beam=8))
    with ServerThread(app) as server, sync_api.sync_playwright() as playwright:
        origin = f"http://127.0.0.1:{server.port}"
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(origin + "/")
        page.wait_for_function("document.getElementById('beam').max === '8'")
        assert "xx" in page.inner_text("#src-lang") and "yy" in page.inner_text("#tgt-lang")

        page.fill("#source", "\n".join(lines))
        page.eval_on_selector(
            "#beam", "el => { el.value = '3'; el.dispatchEvent(new Event('input')); }"
        )
        assert page.inner_text("#beam-value") == "3"
        page.click("#translate")
        page.wait_for_selector("#heatmap svg rect.cell", timeout=30_000)

        assert page.locator("#translations li").all_inner_texts() == [h[0].text for h in expected]
        assert page.locator("#nbest tbody tr").count() == 3
        first_row = page.locator("#nbest tbody tr").first.locator("td").all_inner_texts()
        assert first_row == ["1", f"{expected[0][0].score:.3f}", expected[0][0].text]
        rows, columns = (
            expected[0][0].attention.shape[0],
            len(translator.codec.source_pieces(lines[0])) + 1,
        )
        assert page.locator("#heatmap rect.cell").count() == rows * columns
        assert "2 lines" in page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "translate.png"), full_page=True)

        page.locator("#translations li").nth(1).click()  # the second line's details
        page.wait_for_function(
            f"document.getElementById('heatmap').dataset.source === {lines[1]!r}"
        )
        rows, columns = (
            expected[1][0].attention.shape[0],
            len(translator.codec.source_pieces(lines[1])) + 1,
        )
        assert page.locator("#heatmap rect.cell").count() == rows * columns

        page.fill("#source", "\n".join(["a"] * 101))  # over the server's --max-lines
        page.click("#translate")
        page.wait_for_selector("#status.error")
        assert page.inner_text("#status") == "101 texts; the limit is 100 (--max-lines)"
        browser.close()
    assert (tmp_path / "translate.png").stat().st_size > 10_000
    assert errors == []
    assert requests and all(url.startswith(origin + "/") for url in requests), requests
