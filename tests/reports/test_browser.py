"""Every report in a real headless Chromium, offline: it draws, logs no error or warning, requests nothing
from a network, reacts to its selectors, and shows token text as text. A PNG of each page is saved."""

import json
import time

import pytest

from reports.browser import Browser, BrowserError
from reports.registry import REPORTS
from tests.reports.conftest import XSS_IMG, XSS_SCRIPT

pytestmark = pytest.mark.browser

SELECTS = "Array.from(document.querySelectorAll('.vega-bindings select'))"
SET_SELECT = """(async () => {
  const s = %s[%d];
  s.value = s.options[%d].value;
  s.dispatchEvent(new Event('change'));
  await window.kvwView.runAsync();
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return s.value;
})()"""


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def test_every_report_draws_offline_without_errors(built_reports, browser):
    out, built = built_reports
    shots = out / "png"
    for b in [*built, type(built[0])("index", out / "index.html", "ok", 0, 0.0, None)]:
        page = browser.open(b.path)
        try:
            assert page.state == ("nodata" if b.status == "no data" else "done"), (b.name, page.state, page.errors)
            assert page.errors == [] and page.warnings == [], b.name
            assert page.requests == [] and page.dialogs == [], b.name
            if b.name != "index" and b.status == "ok":
                assert page.marks() > 0, b.name
                assert page.evaluate("document.querySelector('#vis svg').getBBox().width") > 100, b.name
            png = page.screenshot(shots / f"{b.name}.png")
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, b.name
        finally:
            browser.close_page(page)
    assert len(list(shots.glob("*.png"))) == len(REPORTS) + 1


def test_every_selector_choice_redraws_without_errors(built_reports, browser):
    """First, last and a middle choice of every dropdown on every page."""
    out, built = built_reports
    tried = 0
    for b in built:
        page = browser.open(b.path)
        try:
            counts = page.evaluate(f"{SELECTS}.map((s) => s.options.length)")
            for i, n in enumerate(counts):
                for choice in sorted({0, n // 2, n - 1}):
                    page.evaluate(SET_SELECT % (SELECTS, i, choice))
                    assert page.errors == [] and page.warnings == [], (b.name, i, choice, page.errors)
                    assert page.marks() > 0, (b.name, i, choice)
                    tried += 1
        finally:
            browser.close_page(page)
    assert tried >= 40  # most reports have a selector


# Resolves once Vega's tooltip holds the given text (a MutationObserver: no fixed wait), false after 10 s.
TOOLTIP_SHOWS = """new Promise((resolve) => {
  const want = %s;
  const shown = () => { const t = document.getElementById('vg-tooltip-element');
                        return !!t && t.textContent.includes(want); };
  if (shown()) return resolve(true);
  const seen = new MutationObserver(() => { if (shown()) { seen.disconnect(); resolve(true); } });
  seen.observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true});
  setTimeout(() => { seen.disconnect(); resolve(shown()); }, 10000);
})"""


def test_token_text_is_text_never_markup(built_reports, browser):
    """Two tokens carry markup; on the low-importance page they are axis labels and tooltip values
    (spaces shown as '·', as every token's are)."""
    out, _ = built_reports
    img = XSS_IMG.replace(" ", "·")
    page = browser.open(out / "low_importance_tokens.html")
    try:
        labels = page.evaluate("Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)")
        assert any(img in t for t in labels) and any(XSS_SCRIPT in t for t in labels)
        assert page.evaluate("document.querySelectorAll('img, #vis script').length") == 0
        box = page.evaluate(
            "(() => { const m = Array.from(document.querySelectorAll('#vis svg path[role=graphics-symbol]'))"
            f".find((e) => (e.getAttribute('aria-label') || '').includes({img!r}));"
            " const r = m.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        page.hover(*box)
        assert page.evaluate(TOOLTIP_SHOWS % json.dumps(img)), "no tooltip with the token within 10 s"
        tip = page.evaluate(
            "(() => { const t = document.getElementById('vg-tooltip-element');"
            " return t ? [t.textContent, t.innerHTML, t.querySelectorAll('img').length] : null; })()"
        )
        assert tip is not None and img in tip[0] and "&lt;img" in tip[1] and tip[2] == 0
        assert page.dialogs == [] and page.errors == []
    finally:
        browser.close_page(page)


def test_no_data_pages_render_their_message(small_warehouse, tmp_path, browser):
    from reports.build import build_all

    built = build_all(small_warehouse["db"], tmp_path, only=["eviction_patterns", "kv_caching"])
    for b in built:
        page = browser.open(b.path)
        try:
            assert page.state == "nodata" and page.errors == []
            assert "No data yet" in page.evaluate("document.getElementById('nodata').textContent")
        finally:
            browser.close_page(page)


def test_every_page_of_every_run_draws(built_two_runs, browser):
    """Every page of every run draws without errors or requests."""
    out, built = built_two_runs
    pages = [p for b in built for p in (b, *b.others)]
    assert len(pages) > len(built)
    for b in pages:
        page = browser.open(b.path)
        try:
            assert page.state == ("nodata" if b.status == "no data" else "done"), (b.path.name, page.errors)
            assert page.errors == [] and page.warnings == [] and page.requests == [], b.path.name
            if b.status == "ok":
                assert page.marks() > 0, b.path.name
        finally:
            browser.close_page(page)


def test_the_run_selector_opens_the_other_run_and_cross_run_names_both(built_two_runs, two_run_warehouse, browser):
    out, built = built_two_runs
    b = next(b for b in built if b.name == "token_magnitudes")
    page = browser.open(b.path)
    try:
        labels = page.evaluate("Array.from(document.querySelectorAll('#run-select option')).map((o) => o.textContent)")
        assert len(labels) == 2 and two_run_warehouse["second_run"] in labels[1]
        page.evaluate("(() => { const s = document.getElementById('run-select'); s.selectedIndex = 1;"
                      " s.dispatchEvent(new Event('change')); })()")  # fmt: skip
        target, seen = b.others[0].path.name, ""
        for _ in range(100):  # the navigation replaces the page's context: poll from here
            try:
                seen = page.evaluate("location.pathname")
            except BrowserError:
                seen = ""
            if seen.endswith(target):
                break
            time.sleep(0.05)
        assert seen.endswith(target), seen
    finally:
        browser.close_page(page)
    cross = browser.open(out / "cross_run.html")
    try:
        text = cross.evaluate("document.getElementById('vis').textContent")
        assert two_run_warehouse["run_id"] in text and two_run_warehouse["second_run"] in text  # both panels labelled
        # two runs: both named as text, nothing to select; the cache setting is a radio
        assert cross.evaluate("document.querySelectorAll('.vega-bindings select').length") == 0
        bound = cross.evaluate("Array.from(document.querySelectorAll('.vega-bind-name')).map((e) => e.textContent)")
        assert any(t.startswith("left run: " + two_run_warehouse["run_id"]) for t in bound), bound
    finally:
        browser.close_page(cross)
