-- kv_heatmap: one row per (sample, layer, kv_head, position) for the first $max_samples samples of the
-- run, at about $positions of the sampled positions (evenly thinned): the raw key and value vectors
-- as hundredths (-99..99) of the layer's largest |entry| (k_scale, v_scale: entry = k_pct * k_scale / 99), two
-- digits each, so the page stays small; beside the token they belong to.
WITH chosen AS (
    SELECT run_id, task, sample_id, sample
    FROM sample_labels
    WHERE run_id = $run_id
    ORDER BY sample
    LIMIT $max_samples
),
sampled AS (
    SELECT DISTINCT run_id, task, sample_id, position
    FROM kv
    JOIN chosen USING (run_id, task, sample_id)
),
numbered AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY task, sample_id ORDER BY position) - 1 AS i,
        count(*) OVER (PARTITION BY task, sample_id) AS n
    FROM sampled
),
thinned AS (
    SELECT run_id, task, sample_id, position
    FROM numbered
    WHERE i % greatest(1, ceil(n / $positions)::INTEGER) = 0
),
entries AS (
    SELECT
        c.sample, kv.layer, kv.kv_head, kv.position, kv.key, kv.value,
        token_label(t.token_text) AS token,
        max(list_max(list_transform(kv.key, lambda x: abs(x)))) OVER w AS k_max,
        max(list_max(list_transform(kv.value, lambda x: abs(x)))) OVER w AS v_max
    FROM kv
    JOIN chosen AS c USING (run_id, task, sample_id)
    JOIN thinned USING (run_id, task, sample_id, position)
    JOIN tokens AS t USING (run_id, task, sample_id, position)
    WINDOW w AS (PARTITION BY c.sample, kv.layer)
)
SELECT
    sample, layer, kv_head, position, token,
    k_max::DOUBLE AS k_scale,
    v_max::DOUBLE AS v_scale,
    list_transform(key, lambda x: round(99 * x / greatest(k_max, 1e-6))::INTEGER) AS k_pct,
    list_transform(value, lambda x: round(99 * x / greatest(v_max, 1e-6))::INTEGER) AS v_pct
FROM entries
ORDER BY sample, layer, kv_head, position;
