"""4. kv_pca_by_position: the keys and the values of one layer in 2-D, coloured by position.

Each point is one sampled token; its coordinates are the first two principal
components of that layer's key (or value) vectors, all KV heads side by side.
A smooth colour gradient along a curve means the vectors encode position
(RoPE leaves its trace in keys); tight clusters of far-apart positions mean
content dominates; an isolated point is usually the attention sink.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pyarrow as pa

from reports.base import Data, Report, compact, options
from reports.charts import dropdown, equals, heat_color


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of the rows of x: (coordinates [n, 2], variance shares [2]).

    Through the n x n Gram matrix (n = sampled tokens < vector size): an eigh of 128 x 128 is ~10x
    faster than an SVD here. Signs are fixed (largest |coordinate| positive) so builds do not flip.
    """
    centered = x - x.mean(axis=0, keepdims=True)
    gram = centered @ centered.T
    values, vectors = np.linalg.eigh(gram)  # ascending
    top = np.clip(values[::-1][:2], 0, None)
    coords = vectors[:, ::-1][:, :2] * np.sqrt(top)
    coords *= np.sign(coords[np.abs(coords).argmax(axis=0), range(coords.shape[1])])
    shares = top / (float(np.trace(gram)) or 1.0)
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))), np.pad(shares, (0, 2 - len(shares)))


def prepare(data: Data) -> Data:
    """PCA per (sample, layer, tensor) of the vectors DuckDB gathered."""
    vec = data["kv_layer_vectors"]
    samples = np.asarray(vec.column("sample").to_pylist(), dtype=object)
    layers = vec.column("layer").to_numpy()
    points, shares = [], []
    for tensor, col in (("key", "k"), ("value", "v")):
        flat = vec.column(col).combine_chunks()
        x = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(vec), -1)
        for sample, layer in dict.fromkeys(zip(samples, layers, strict=True)):
            rows = np.flatnonzero((samples == sample) & (layers == layer))
            coords, share = pca_2d(x[rows])
            points.append(
                pa.table(
                    {
                        "sample": [sample] * len(rows),
                        "layer": np.full(len(rows), layer),
                        "tensor": [tensor] * len(rows),
                        "position": vec.column("position").take(rows),
                        "token": vec.column("token").take(rows),
                        "pc1": coords[:, 0],
                        "pc2": coords[:, 1],
                    }
                )
            )
            shares.append({"sample": sample, "layer": int(layer), "tensor": tensor, "pc1": share[0], "pc2": share[1]})
    empty = pa.table({"sample": [], "layer": [], "tensor": [], "pc1": [], "pc2": []})
    return {
        "points": compact(pa.concat_tables(points)) if points else empty,
        "shares": compact(pa.Table.from_pylist(shares)) if shares else empty,
    }


def _panel(points, shares, sample, layer, tensor: str) -> alt.LayerChart:
    keep = [equals("sample", sample), equals("layer", layer), f"datum.tensor === {tensor!r}"]
    dots = (
        alt.Chart(points)
        .transform_filter(" && ".join(keep))
        .mark_circle(size=38, opacity=0.85)
        .encode(
            x=alt.X("pc1:Q", title="PC 1"),
            y=alt.Y("pc2:Q", title="PC 2"),
            color=heat_color("position:Q", "token position"),
            tooltip=[
                alt.Tooltip("token:N"),
                "position:Q",
                "layer:Q",
                alt.Tooltip("pc1:Q", format=".3f"),
                alt.Tooltip("pc2:Q", format=".3f"),
            ],
        )
    )
    note = (
        alt.Chart(shares)
        .transform_filter(" && ".join(keep))
        .transform_calculate(
            text=f"'{tensor}s: PC 1 explains ' + format(datum.pc1, '.0%') + ', PC 2 ' + format(datum.pc2, '.0%')"
        )
        .mark_text(align="left", baseline="top", x=4, y=-16, fontSize=12, fontWeight="bold")
        .encode(text="text:N")
    )
    return alt.layer(dots, note).properties(width=420, height=380)


def chart(data: Data) -> alt.TopLevelMixin:
    points, shares = data["points"], data["shares"]
    sample = dropdown("sample", options(points, "sample"), "sample")
    layer = dropdown("layer", sorted(options(points, "layer")), "layer")
    return (
        alt.hconcat(
            _panel(points, shares, sample, layer, "key"),
            _panel(points, shares, sample, layer, "value"),
        )
        .add_params(sample, layer)
        .resolve_scale(color="shared")
    )


REPORT = Report(
    name="kv_pca_by_position",
    title="4. PCA of keys and values, coloured by position",
    summary="Each sampled token's key and value vectors (all KV heads of a layer) projected on their first "
    "two principal components, coloured by position; per sample and layer.",
    queries=("kv_layer_vectors",),
    chart=chart,
    prepare=prepare,
    needs=("samples", "kv"),
    hint="The raw K/V table is off by default: extract with `-p raw_kv=true` (scripts/quickstart.sh does).",
    params={"max_samples": 6, "layer_step": 5},
)
