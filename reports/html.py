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
table.index { border-collapse: collapse; } table.index td, table.index th { padding: .35em .8em; text-align: left;
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


def _header(title: str, summary: str, meta: str, back: bool = True) -> str:
    link = '<a href="index.html">&larr; all reports</a>\n' if back else ""
    meta_html = f'<p class="meta">{escape(meta)}</p>' if meta else ""
    return f'<header>\n{link}<h1>{escape(title)}</h1>\n<p class="what">{escape(summary)}</p>\n{meta_html}\n</header>'


def chart_page(chart: alt.TopLevelMixin, title: str, summary: str, meta: str = "") -> str:
    """A standalone page drawing `chart` with the inlined Vega bundle."""
    head = f"<script>\n{vega_bundle()}\n</script>\n"
    body = (
        f"{_header(title, summary, meta)}\n"
        '<div id="vis"></div>\n'
        f'<script type="application/json" id="spec">{json_for_html(spec_of(chart))}</script>\n'
        f'<script type="application/json" id="embed-options">{json_for_html(EMBED_OPTIONS)}</script>\n'
        f"<script>{RENDER_SCRIPT}</script>"
    )
    return _page(title, body, head)


def no_data_page(title: str, summary: str, missing: list[str], hint: str) -> str:
    """What a report shows before the tables it reads have rows: what is missing and what to run."""
    tables = ", ".join(f"<code>{escape(t)}</code>" for t in missing)
    body = (
        f"{_header(title, summary, '')}\n"
        f'<div class="nodata" id="nodata"><strong>No data yet:</strong> the table(s) {tables} have no rows '
        f"for this warehouse.<br>{escape(hint)}</div>"
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


def index_page(entries: list[IndexEntry], meta: str) -> str:
    """The table of contents: one line per report on what it shows, its state and its size."""
    rows = "\n".join(
        f'<tr><td><a href="{escape(e.file)}">{escape(e.title)}</a></td><td>{escape(e.summary)}</td>'
        f"<td>{escape(e.status)}</td><td class='num'>{e.size_bytes / 1e6:.2f} MB</td>"
        f"<td class='num'>{e.seconds:.1f} s</td></tr>"
        for e in entries
    )
    what = "One offline, interactive page per feature of the briefs."
    body = (
        f"{_header('kvwarehouse reports', what, meta, back=False)}\n"
        '<table class="index"><thead><tr><th>report</th><th>what it shows</th><th>state</th><th>size</th>'
        f"<th>build</th></tr></thead>\n<tbody>\n{rows}\n</tbody></table>"
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
