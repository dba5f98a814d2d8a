-- layer_magnitude_by_position: one row per (sample, layer): the mean key norm of each of $buckets
-- position buckets (over its tokens and KV heads) relative to the layer's mean over the sample
-- (1 = average), as a list beside the list of bucket start positions: which layers single out which
-- stretches of the prompt. Lists keep the page small; the chart flattens them.
WITH per_bucket AS (
    SELECT
        s.sample, ts.layer,
        pos_bucket(ts.position, s.n_tokens, $buckets) AS bucket,
        min(ts.position) AS position,
        avg(ts.key_norm) AS key_norm
    FROM token_stats AS ts
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE ts.run_id = $run_id AND s.shown
    GROUP BY ALL
),
relative AS (
    SELECT *, key_norm / avg(key_norm) OVER (PARTITION BY sample, layer) AS rel
    FROM per_bucket
)
SELECT
    sample,
    layer,
    list(position ORDER BY bucket) AS positions,
    list(round(rel::DOUBLE, 3) ORDER BY bucket) AS key_norm_rel
FROM relative
GROUP BY sample, layer
ORDER BY sample, layer;
