-- cand: one row per (run_id, task, sample_id, layer, kv_head, position) of the cache at eviction time.
-- Reads src_samples and src_stats (views over the chosen samples' `samples` and `token_stats` files).
-- question_aware evicts after the whole prompt (n = n_tokens, attention from its last window);
-- question_agnostic after instruction + context (n = context_end, attention from the window ending there).
-- k: the budget in tokens for the sample (a ratio rounds half up, at least 1); NULL without a budget.
-- NaN becomes NULL, which every selection ranks last.
CREATE OR REPLACE TEMP TABLE cand AS
WITH sample_n AS (
    SELECT
        run_id, task, sample_id,
        CASE WHEN $setting = 'question_agnostic' THEN context_end ELSE n_tokens END AS n
    FROM src_samples
),
budgeted AS (
    SELECT
        *,
        CASE
            WHEN $budget::DOUBLE IS NULL THEN NULL
            WHEN $budget::DOUBLE < 1 THEN greatest(1, floor($budget::DOUBLE * n + 0.5))
            ELSE $budget::DOUBLE
        END::BIGINT AS k
    FROM sample_n
),
observed AS (
    SELECT
        t.run_id, t.model, t.task, t.sample_id, t.layer, t.kv_head, t.position, b.n, b.k,
        t.key_norm::DOUBLE AS key_norm,
        t.value_norm::DOUBLE AS value_norm,
        (CASE WHEN $setting = 'question_agnostic' THEN t.attn_received_context ELSE t.attn_received END)::DOUBLE
            AS attn
    FROM src_stats AS t
    JOIN budgeted AS b USING (run_id, task, sample_id)
    WHERE t.position < b.n
)
SELECT
    * REPLACE (
        CASE WHEN isnan(key_norm) THEN NULL ELSE key_norm END AS key_norm,
        CASE WHEN isnan(value_norm) THEN NULL ELSE value_norm END AS value_norm,
        CASE WHEN isnan(attn) THEN NULL ELSE attn END AS attn
    )
FROM observed;
