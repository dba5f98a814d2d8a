"""Report 13b (keep_mass proxy vs measured KL): Spearman's rho against a direct computation, NULL KLs left out
and counted; the page from the real report warehouse (keep-sets over real token_stats + literal quality rows)
draws in headless Chromium without errors."""

import numpy as np
import pytest

from reports import build, keep_mass_vs_kl
from reports.browser import Browser
from warehouse import quality_stats


def direct_spearman(x, y):
    """Pearson's r of average ranks, the ranks counted by hand."""

    def ranks(v):
        return np.array([sum(w < a for w in v) + (sum(w == a for w in v) + 1) / 2 for a in v])

    rx, ry = ranks(x), ranks(y)
    return float(((rx - rx.mean()) * (ry - ry.mean())).sum() / np.sqrt(((rx - rx.mean()) ** 2).sum()
                                                                        * ((ry - ry.mean()) ** 2).sum()))  # fmt: skip


def test_spearman_against_a_direct_computation():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 30).astype(float)  # ties on purpose
    y = x * -0.3 + rng.normal(0, 1, 30)
    assert quality_stats.spearman(x, y) == pytest.approx(direct_spearman(x, y))
    assert quality_stats.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert quality_stats.spearman([1, 2], [1, 2]) is None and quality_stats.spearman([1, 1, 1], [1, 2, 3]) is None


def test_correlations_per_policy_skip_null_kls():
    rows = []
    for i, mass in enumerate([0.2, 0.4, 0.6, 0.8]):
        for label, sign in (("good", -1), ("bad", 1)):
            rows.append({"setting": "question_aware", "label": label, "attn_mass_kept": mass,
                         "key_norm_mass_kept": 1 - mass, "kl_continuation": 1 + sign * mass,
                         "kl": None if i == 0 else 2 + sign * mass})  # fmt: skip
    got = {(r["label"], r["proxy"], r["measure"]): r for r in keep_mass_vs_kl.correlations(rows)}
    assert got["good", "attn_mass_kept", "kl_continuation"]["rho"] == pytest.approx(-1)
    assert got["bad", "attn_mass_kept", "kl_continuation"]["rho"] == pytest.approx(1)
    assert got["good", "key_norm_mass_kept", "kl_continuation"]["rho"] == pytest.approx(1)
    one = got["good", "attn_mass_kept", "kl"]
    assert (one["n"], one["n_null"], one["text"]) == (3, 1, "ρ = -1.00 (n = 3)")


@pytest.mark.browser
def test_page_draws_from_real_keep_sets(report_warehouse, tmp_path):
    (built,) = build.build_all(report_warehouse["db"], tmp_path, only=["keep_mass_vs_kl"])
    assert built.status == "ok" and built.size_bytes < 3_000_000, built.status
    with Browser() as browser:
        page = browser.open(built.path)
        try:
            assert page.state == "done" and page.errors == [] and page.warnings == [] and page.requests == []
            texts = page.evaluate("Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)")
            # the literal quality rows predate kl_continuation: the default measure is NULL there, said so
            assert any(t.startswith("ρ undefined (n = 0)") for t in texts), texts
            page.evaluate(
                "(async () => { const s = Array.from(document.querySelectorAll('.vega-bindings select'))[1];"
                " s.value = 'kl'; s.dispatchEvent(new Event('change')); await window.kvwView.runAsync(); })()"
            )
            texts = page.evaluate("Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)")
            # the literal answer KLs exist (n = 3 per policy) but are constant per policy: rho is undefined, said so
            assert any(t == "ρ undefined (n = 3)" for t in texts) and page.errors == [] and page.warnings == [], texts
        finally:
            browser.close_page(page)
