-- The cache at eviction time, as the ranking step reads it (CTEs; `{cut}` and `{attn}` come from
-- transform/settings.py: the samples column giving the cache length and the observed attention column).
-- cand_samples: one row per selected sample: n = positions in the cache, k = the budget in tokens (a share
-- rounds half up, at least 1; NULL without a budget; only position policies read it), sample_key = a number
-- for the sample within this statement (grouping and windows on one integer are much cheaper than on the
-- run_id, task, sample_id strings).
-- cand: one row per (sample, layer, kv_head, position < n) with the statistics a score may use; NaN -> NULL,
-- which every ranking puts last.
cand_samples AS (
    SELECT
        run_id, model, task, sample_id, n_tokens, {cut}::BIGINT AS n,
        row_number() OVER (ORDER BY run_id, task, sample_id) AS sample_key,
        CASE
            WHEN $budget::DOUBLE IS NULL THEN NULL
            WHEN $budget::DOUBLE < 1 THEN greatest(1, floor($budget::DOUBLE * {cut} + 0.5))
            ELSE $budget::DOUBLE
        END::BIGINT AS k
    FROM src_samples
),
cand AS (
    SELECT
        t.run_id, t.model, t.task, t.sample_id, s.sample_key, t.layer, t.kv_head, t.position, s.n,
        CASE WHEN isnan(t.key_norm::FLOAT) THEN NULL ELSE t.key_norm::FLOAT END AS key_norm,
        CASE WHEN isnan(t.value_norm::FLOAT) THEN NULL ELSE t.value_norm::FLOAT END AS value_norm,
        CASE WHEN isnan({attn}::FLOAT) THEN NULL ELSE {attn}::FLOAT END AS attn
    FROM src_stats AS t
    JOIN cand_samples AS s USING (run_id, task, sample_id)
    WHERE t.position < s.n
)
