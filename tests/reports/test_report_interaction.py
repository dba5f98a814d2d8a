"""Interactions that a selector test cannot reach, in real headless Chromium: report 12's brush on the
context/question strip moves its token zoom; report 15's query-head selector names each head's KV head."""

import pytest

from reports.browser import Browser

pytestmark = pytest.mark.browser

TEXTS = "Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)"
CONTEXT_BAR = (
    "(() => { const m = Array.from(document.querySelectorAll('#vis svg path[role=graphics-symbol]'))"
    ".find((e) => (e.getAttribute('aria-label') || '').includes('segment: context'));"
    " const r = m.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()"
)


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def drag(page, x0: float, x1: float, y: float) -> None:
    steps = [("mousePressed", x0), ("mouseMoved", (x0 + x1) / 2), ("mouseMoved", x1), ("mouseReleased", x1)]
    for kind, x in steps:
        page.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1,
                  buttons=0 if kind == "mouseReleased" else 1)  # fmt: skip
    page.evaluate("new Promise((r) => setTimeout(r, 300))")


def test_dragging_on_the_strip_moves_the_token_zoom(built_reports, browser):
    out, _ = built_reports
    page = browser.open(out / "eviction_patterns.html")
    try:
        assert page.state == "done" and page.errors == []
        assert page.evaluate("window.kvwView.signal('brush').position") == [0, 96]  # the zoom starts at the start
        before = page.evaluate(TEXTS)
        x, y, w, h = page.evaluate(CONTEXT_BAR)
        drag(page, x + 0.6 * w, x + 0.7 * w, y + h / 2)
        lo, hi = page.evaluate("window.kvwView.signal('brush').position")
        assert 96 < lo < hi and page.errors == [] and page.warnings == []
        after = page.evaluate(TEXTS)
        assert after != before and page.marks() > 0  # other tokens are labelled now
    finally:
        browser.close_page(page)


def test_query_head_selector_names_the_kv_head(built_reports, browser):
    out, _ = built_reports
    page = browser.open(out / "kv_caching.html")
    try:
        labels = page.evaluate(
            "Array.from(document.querySelectorAll('.vega-bindings select')).flatMap((s) =>"
            " Array.from(s.options).map((o) => o.textContent))"
        )
        assert [f"{h} (KV head {h // 3})" for h in range(9)] == [t for t in labels if "KV head" in t]
        text = " ".join(page.evaluate(TEXTS))
        assert "equal within 1e-5" in text and "NOT" not in text
    finally:
        browser.close_page(page)
