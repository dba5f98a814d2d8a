"""The one HTML writer: every report page and the index, standalone and offline.

Each page inlines the vega-embed bundle that `vl-convert-python` ships (~0.9 MB,
no CDN), and carries its spec as a JSON data block in which `<`, `>` and `&`
are escaped, so a token such as `</script><img onerror=...>` stays data.
Everything else on the page goes through `html.escape`. The page marks
`<html data-render="done|error|nodata">` when vega-embed settles, which the
browser test waits for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from pathlib import Path

import altair as alt

EMBED_OPTIONS = {
    "renderer": "svg",  # marks and labels are DOM nodes: searchable text, testable
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},  # the editor is online
    "tooltip": {"theme": "light"},  # vega-tooltip escapes HTML in values by default (sanitize)
}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #222; }
header { max-width: 70em; } h1 { font-size: 1.45em; margin: .2em 0; } a { color: #1f5fa8; }
p.what { margin: .3em 0; } p.meta { color: #666; font-size: .9em; margin: .2em 0 1em; }
.nodata { border: 1px solid #e0b252; background: #fff8e6; padding: 1em 1.3em; max-width: 60em; }
.nodata code, p code { background: #f2f2f2; padding: 0 .25em; }
#vis.vega-embed { display: flex; } #vis .chart-wrapper { display: flex; flex-direction: column; }
.vega-bindings { order: -1; margin: .2em 0 .8em; } /* selectors above the chart, not below it */
.vega-bind { display: inline-block; margin-right: 1.2em; } .vega-bind-name { font-weight: 600; margin-right: .3em; }
details.about { max-width: 70em; margin: .2em 0 .8em; background: #f7f9fc; border-left: 3px solid #9bb5d6;
  padding: .3em .9em; } details.about summary { cursor: pointer; font-weight: 600; color: #1f5fa8; }
details.about p { margin: .4em 0; } details.about dl { margin: .4em 0; } details.about dt { font-weight: 600; }
details.about dd { margin: 0 0 .3em 1.2em; }
details.terms summary { font-weight: 400; color: #1f5fa8; margin: .2em 0; }
nav.runs { margin: .2em 0 .6em; } nav.runs select { font: inherit; max-width: 60em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table.index, table.facts { border-collapse: collapse; } table.facts td, table.facts th { padding: .25em .7em;
  text-align: left; border-bottom: 1px solid #eee; } table.facts td.num { text-align: right; }
table.index td, table.index th { padding: .35em .8em; text-align: left;
  border-bottom: 1px solid #eee; vertical-align: top; } td.num { text-align: right; color: #666; }
"""

RENDER_SCRIPT = """
const spec = JSON.parse(document.getElementById("spec").textContent);
const opts = JSON.parse(document.getElementById("embed-options").textContent);
vegaEmbed("#vis", spec, opts)
  .then((result) => {
    window.kvwView = result.view;  // for the console and the browser tests
    document.documentElement.dataset.render = "done";
  })
  .catch((err) => {
    console.error(err);
    document.documentElement.dataset.render = "error";
    document.getElementById("vis").textContent = "This chart failed to render: " + err;
  });
"""


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script, matched to Altair's Vega-Lite version."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())


def json_for_html(obj: object) -> str:
    """JSON that cannot close the <script> element it sits in, whatever strings the data holds."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def spec_of(chart: alt.TopLevelMixin) -> dict:
    """The Vega-Lite spec with every dataset inline (no row limit: reports bound their rows in SQL)."""
    with alt.data_transformers.disable_max_rows():
        return chart.to_dict()


def _page(title: str, body: str, head_extra: str = "", render: str | None = None) -> str:
    state = f' data-render="{render}"' if render else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"{state}>\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n{head_extra}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


@dataclass(frozen=True)
class RunLink:
    """One entry of a page's run selector: the same report drawn from another run."""

    label: str
    file: str  # page file name beside index.html
    current: bool = False


@dataclass(frozen=True)
class About:
    """'How to read this': paragraphs from the report module's docstring and the definitions they lean on."""

    paragraphs: tuple[str, ...] = ()
    terms: tuple[tuple[str, str], ...] = ()  # (term, definition)


def _run_nav(runs: list[RunLink] | None) -> str:
    """A run selector that navigates between the pages of each run (plain links, so it works offline)."""
    if not runs or len(runs) < 2:
        return ""
    opts = "".join(
        f'<option value="{escape(r.file)}"{" selected" if r.current else ""}>{escape(r.label)}</option>' for r in runs
    )
    return (
        '<nav class="runs"><label><strong>run</strong> '
        f'<select id="run-select" onchange="window.location.href = this.value">{opts}</select></label> '
        f'<span class="meta">({len(runs)} runs hold this report\'s data)</span></nav>\n'
    )


def _about(about: About | None) -> str:
    if not about or not (about.paragraphs or about.terms):
        return ""
    paras = "".join(f"<p>{escape(p)}</p>" for p in about.paragraphs)
    terms = "".join(f"<dt>{escape(t)}</dt><dd>{escape(d)}</dd>" for t, d in about.terms)
    n = len(about.terms)
    defs = f'<details class="terms"><summary>definitions used here ({n})</summary><dl>{terms}</dl></details>'
    return (
        f'<details class="about" id="about" open><summary>How to read this</summary>{paras}'
        f"{defs if terms else ''}</details>\n"
    )


def _header(
    title: str,
    summary: str,
    meta: str,
    back: bool = True,
    about: About | None = None,
    runs: list[RunLink] | None = None,
) -> str:
    link = '<a href="index.html">&larr; all reports</a>\n' if back else ""
    meta_html = f'<p class="meta">{escape(meta)}</p>\n' if meta else ""
    return (
        f'<header>\n{link}<h1>{escape(title)}</h1>\n<p class="what">{escape(summary)}</p>\n{meta_html}'
        f"{_run_nav(runs)}{_about(about)}</header>"
    )


def chart_page(
    chart: alt.TopLevelMixin,
    title: str,
    summary: str,
    meta: str = "",
    about: About | None = None,
    runs: list[RunLink] | None = None,
) -> str:
    """A standalone page drawing `chart` with the inlined Vega bundle."""
    head = f"<script>\n{vega_bundle()}\n</script>\n"
    body = (
        f"{_header(title, summary, meta, about=about, runs=runs)}\n"
        '<div id="vis"></div>\n'
        f'<script type="application/json" id="spec">{json_for_html(spec_of(chart))}</script>\n'
        f'<script type="application/json" id="embed-options">{json_for_html(EMBED_OPTIONS)}</script>\n'
        f"<script>{RENDER_SCRIPT}</script>"
    )
    return _page(title, body, head)


def no_data_page(
    title: str,
    summary: str,
    missing: list[str],
    hint: str,
    runs: list[RunLink] | None = None,
    reason: str | None = None,
) -> str:
    """What a report shows before the tables it reads have rows: what is missing and what to run."""
    tables = ", ".join(f"<code>{escape(t)}</code>" for t in missing)
    where = "run" if runs else "warehouse"
    what = escape(reason) if reason else f"the table(s) {tables} have no rows for this {where}."
    body = (
        f"{_header(title, summary, '', runs=runs)}\n"
        f'<div class="nodata" id="nodata"><strong>No data yet:</strong> {what}<br>{escape(hint)}</div>'
    )
    return _page(title, body, render="nodata")


def failed_page(title: str, summary: str, error: str) -> str:
    """The page of a report that raised: the error, so the index never links to nothing."""
    body = (
        f"{_header(title, summary, '')}\n"
        f'<div class="nodata" id="failed"><strong>This report failed to build:</strong> {escape(error)}</div>'
    )
    return _page(title, body, render="failed")


@dataclass(frozen=True)
class IndexEntry:
    file: str  # page file name beside index.html
    title: str
    summary: str
    status: str  # ok | no data | failed: ...
    size_bytes: int
    seconds: float
    runs: tuple[RunLink, ...] = ()  # the same report drawn from other runs


@dataclass(frozen=True)
class Facts:
    """A titled table of provenance facts on the index (runs, samples per task, evaluations)."""

    title: str
    note: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    empty: str = "none"  # what to say when there are no rows


def _cell(v) -> str:
    if v is None:
        return "<td>–</td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, int | float):
        text = f"{v:,}" if isinstance(v, int) or float(v).is_integer() else f"{v:,.3g}"
        return f"<td class='num'>{text}</td>"
    return f"<td>{escape(str(v))}</td>"


def facts_table(facts: Facts) -> str:
    head = f"<h2>{escape(facts.title)}</h2>\n" + (f'<p class="meta">{escape(facts.note)}</p>\n' if facts.note else "")
    if not facts.rows:
        return f"{head}<p>{escape(facts.empty)}</p>"
    cols = "".join(f"<th>{escape(c)}</th>" for c in facts.columns)
    rows = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in facts.rows)
    return f'{head}<table class="facts"><thead><tr>{cols}</tr></thead>\n<tbody>\n{rows}\n</tbody></table>'


def index_page(entries: list[IndexEntry], meta: str, facts: list[Facts] | None = None) -> str:
    """The table of contents: one line per report on what it shows, its state and its size; then what the
    pages were built on (runs, samples per task, lengths, truncation, evaluations)."""

    def other_runs(e: IndexEntry) -> str:
        return ", ".join(f'<a href="{escape(r.file)}">{escape(r.label.split(" · ")[0])}</a>' for r in e.runs)

    rows = "\n".join(
        f'<tr><td><a href="{escape(e.file)}">{escape(e.title)}</a></td><td>{escape(e.summary)}</td>'
        f"<td>{escape(e.status)}</td><td>{other_runs(e)}</td><td class='num'>{e.size_bytes / 1e6:.2f} MB</td>"
        f"<td class='num'>{e.seconds:.1f} s</td></tr>"
        for e in entries
    )
    what = "One offline, interactive page per feature of the briefs."
    provenance = "\n".join(facts_table(f) for f in facts or [])
    body = (
        f"{_header('kvwarehouse reports', what, meta, back=False)}\n"
        '<table class="index"><thead><tr><th>report</th><th>what it shows</th><th>state</th><th>other runs</th>'
        f"<th>size</th><th>build</th></tr></thead>\n<tbody>\n{rows}\n</tbody></table>\n"
        f'<section id="provenance">\n{provenance}\n</section>'
    )
    return _page("kvwarehouse reports", body, render="done")


def write(path: str | os.PathLike, text: str) -> Path:
    """Write a page atomically, so a browser never opens half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
