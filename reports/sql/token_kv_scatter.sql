-- token_kv_scatter: per sample up to $per_sample tokens (token_summary), chosen as the $extremes most
-- extreme by key norm, by value norm and by attention at each end, plus an evenly hashed sample of the
-- rest: key norm vs value norm per token, with text, category, segment and attention received.
WITH t AS (
    SELECT s.sample, ts.*
    FROM token_summary AS ts
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE ts.run_id = $run_id AND s.shown
),
ranked AS (
    SELECT
        *,
        least(
            row_number() OVER (PARTITION BY sample ORDER BY key_norm, position),
            row_number() OVER (PARTITION BY sample ORDER BY key_norm DESC, position),
            row_number() OVER (PARTITION BY sample ORDER BY value_norm, position),
            row_number() OVER (PARTITION BY sample ORDER BY value_norm DESC, position),
            row_number() OVER (PARTITION BY sample ORDER BY attn_received DESC, position)
        ) AS extreme_rank,
        row_number() OVER (PARTITION BY sample ORDER BY hash(position, sample)) AS draw
    FROM t
),
picked AS (
    SELECT *, row_number() OVER (PARTITION BY sample ORDER BY extreme_rank > $extremes, draw) AS pick
    FROM ranked
)
SELECT
    sample, position, token_label(token_text) AS token, category, segment,
    key_norm, value_norm, attn_received,
    extreme_rank <= $extremes AS extreme
FROM picked
WHERE pick <= $per_sample
ORDER BY sample, position;
