"""13b. keep_mass_vs_kl: does the cheap proxy predict the measured cost of an eviction?

`keep_mass` needs no model run: the share of the observed attention mass (or of the key-norm mass) the kept
positions hold. The KL needs a decode per policy. Each point is one (sample, policy, budget): the proxy
against the measured KL (the continuation KL by default). The bars give Spearman's rank correlation per policy
(over its samples and budgets, with n): near -1, ranking by the proxy orders evictions as the KL does (more
mass kept, less KL). Pitfall: pooled over budgets, the budget itself drives both sides, so a high |rho| can
come from the budget alone; the scatter's colour-by-budget shows it. NULL KLs (one-token answers in
question_aware, rows written before kl_continuation existed) are left out and counted.
"""

from __future__ import annotations

import altair as alt
import pyarrow as pa

from reports.base import Data, Report, compact, options
from reports.charts import dropdown, equals, radio
from warehouse import quality_stats as qs

PROXIES = {"attn_mass_kept": "attention mass kept", "key_norm_mass_kept": "key-norm mass kept"}
KLS = {"kl_continuation": qs.MEASURES["kl_continuation"], "kl": qs.MEASURES["kl"]}


def correlations(rows: list[dict]) -> list[dict]:
    """Spearman's rho of each proxy against each KL, per (setting, policy label), with n and NULLs left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["label"]), []).append(r)
    out = []
    for (setting, label), rs in groups.items():
        for proxy in PROXIES:
            for kl in KLS:
                pairs = [(r[proxy], r[kl]) for r in rs if r[proxy] is not None and r[kl] is not None]
                rho = qs.spearman([p for p, _ in pairs], [k for _, k in pairs])
                out.append({"setting": setting, "label": label, "proxy": proxy, "measure": kl, "n": len(pairs),
                            "n_null": len(rs) - len(pairs), "rho": rho,
                            "text": f"ρ = {rho:+.2f} (n = {len(pairs)})" if rho is not None else
                            f"ρ undefined (n = {len(pairs)})"})  # fmt: skip
    return out


def prepare(data: Data) -> Data:
    rows = data["keep_mass_vs_kl"].to_pylist()
    long = [{**{k: r[k] for k in ("task", "sample_id", "setting", "label", "budget")}, "proxy": p, "proxy_value":
             r[p], "measure": m, "kl_value": r[m]} for r in rows for p in PROXIES for m in KLS]  # fmt: skip
    return {"points": compact(pa.Table.from_pylist(long)), "rho": compact(pa.Table.from_pylist(correlations(rows)))}


def _span(table: pa.Table, column: str) -> list[float] | None:
    values = [v for v in table.column(column).to_pylist() if v is not None]
    return [min(values), max(values)] if values else None


def chart(data: Data) -> alt.TopLevelMixin:
    pts, rho = data["points"], data["rho"]
    setting = radio("setting", options(rho, "setting"), "setting", value="question_aware")
    proxy = dropdown("proxy", list(PROXIES), "proxy", labels=list(PROXIES.values()))
    measure = dropdown("measure", list(KLS), "measured", labels=list(KLS.values()))
    keep = f"{equals('setting', setting)} && {equals('proxy', proxy)} && {equals('measure', measure)}"
    labels = sorted(set(options(rho, "label")))
    color = alt.Color("label:N", title="policy", scale=alt.Scale(domain=labels))
    # fixed domains: a choice whose points are all NULL (question_aware one-token answers) draws an empty
    # panel instead of scales with an infinite extent
    budgets = _span(pts, "budget") or [0.0, 1.0]
    proxies = _span(pts, "proxy_value") or [0.0, 1.0]
    kls = _span(pts, "kl_value") or [0.0, 1.0]
    scatter = (
        alt.Chart(pts)
        .transform_filter(f"{keep} && isValid(datum.kl_value) && isValid(datum.proxy_value)")
        .mark_point(filled=True, opacity=0.7)
        .encode(
            x=alt.X("proxy_value:Q", title="proxy: share of the mass kept", scale=alt.Scale(domain=proxies)),
            y=alt.Y(
                "kl_value:Q",
                title="measured KL(full ‖ evicted), nats/token",
                scale=alt.Scale(domain=[min(0.0, kls[0]), kls[1]]),
            ),
            color=color,
            size=alt.Size("budget:Q", title="budget", scale=alt.Scale(domain=budgets, range=[15, 120])),
            tooltip=[
                "label:N",
                "budget:Q",
                "task:N",
                "sample_id:N",
                alt.Tooltip("proxy_value:Q", format=".3f"),
                alt.Tooltip("kl_value:Q", format=".4g"),
            ],
        )
        .properties(width=520, height=360, title="each (sample, policy, budget): proxy vs measured KL")
    )
    rho_base = alt.Chart(rho).transform_filter(keep)
    bars = rho_base.mark_bar().encode(
        y=alt.Y("label:N", title=None, sort=labels),
        x=alt.X("rho:Q", title="Spearman ρ (proxy vs KL)", scale=alt.Scale(domain=[-1, 1])),
        color=color,
        tooltip=["label:N", alt.Tooltip("rho:Q", format="+.3f"), "n:Q", alt.Tooltip("n_null:Q", title="NULL KL")],
    )
    text = rho_base.mark_text(align="left", dx=4, fontSize=10).encode(
        y=alt.Y("label:N", sort=labels), x=alt.value(4), text="text:N"
    )
    ranks = alt.layer(bars, text).properties(width=300, height=alt.Step(22), title="rank correlation per policy")
    return alt.hconcat(scatter, ranks).add_params(setting, proxy, measure)


REPORT = Report(
    name="keep_mass_vs_kl",
    title="13b. Does the keep_mass proxy predict the measured KL?",
    summary="The model-free proxy (attention or key-norm mass kept) against the measured KL per sample, policy "
    "and budget, with Spearman's rank correlation per policy.",
    queries=("keep_mass_vs_kl",),
    chart=chart,
    needs=("quality", "rankings", "policies"),
    prepare=prepare,
    hint="Needs quality rows and keep-sets of the same run: `prefect deployment run evaluate/longbench` "
    "writes both (it ranks before it decodes); then rebuild the reports.",
)
