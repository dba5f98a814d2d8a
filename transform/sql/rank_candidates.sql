-- The cache at eviction time, as the ranking step reads it (CTEs; `{cut}` and `{attn}` come from
-- transform/settings.py: the samples column giving the cache length and the observed attention column).
-- cand_samples: one row per selected sample: n = positions in the cache, k = the budget in tokens (a share
-- rounds half up, at least 1; NULL without a budget; only position policies read it). `sample_key` (given by
-- src_samples and src_stats) numbers the samples of this statement: joins, groups and windows on one integer
-- are much cheaper than on the run_id, task, sample_id strings, which are joined back once per ranking.
-- cand: one row per (sample_key, layer, kv_head, position < n) with the statistics a score may use;
-- NaN -> NULL, which every ranking puts last.
cand_samples AS (
    SELECT
        run_id, model, task, sample_id, sample_key, n_tokens, {cut}::BIGINT AS n,
        CASE
            WHEN $budget::DOUBLE IS NULL THEN NULL
            WHEN $budget::DOUBLE < 1 THEN greatest(1, floor($budget::DOUBLE * {cut} + 0.5))
            ELSE $budget::DOUBLE
        END::BIGINT AS k
    FROM src_samples
),
cand AS (
    SELECT
        t.sample_key, t.layer, t.kv_head, t.position, s.n,
        CASE WHEN isnan(t.key_norm::FLOAT) THEN NULL ELSE t.key_norm::FLOAT END AS key_norm,
        CASE WHEN isnan(t.value_norm::FLOAT) THEN NULL ELSE t.value_norm::FLOAT END AS value_norm,
        CASE WHEN isnan({attn}::FLOAT) THEN NULL ELSE {attn}::FLOAT END AS attn
    FROM src_stats AS t
    JOIN cand_samples AS s USING (sample_key)
    WHERE t.position < s.n
)
