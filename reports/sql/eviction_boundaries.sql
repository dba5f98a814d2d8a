-- eviction_boundaries: one row per (sample, policy_id, setting) of the samples eviction_pattern draws: what
-- the policy keeps after its budget, measured on the keep-sets (keep_sets), not read from its parameters.
--   variant: the policy's name and parameters other than the budget (one panel each); budget_label: the budget;
--   cache_tokens: positions in the cache at eviction (n); kept_tokens: positions kept (k, mean over the
--   layers x KV heads for per-head policies); sink_tokens: the kept run from position 0; recent_tokens: the
--   kept run ending at the cache's last position; middle_tokens: the rest (kept_tokens - sink - recent);
--   sink_end / recent_start: the sink and recent boundaries kept by every layer and head (sink_end = n_tokens
--   when everything is kept); kept_share: kept share of the whole prompt (positions fed after the cache,
--   the question in question_agnostic, are always kept).
WITH chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens
    FROM sample_labels AS s
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
),
sets AS (
    SELECT c.sample, ks.policy_id, ks.setting, ks.layer, ks.kv_head, ks.n, ks.n_tokens, ks.k,
           list_sort(ks.kept_positions) AS kept
    FROM keep_sets AS ks
    JOIN chosen AS c USING (run_id, task, sample_id)
),
runs AS (  -- sorted kept positions p_1 < p_2 < ...: the sink is where p_i = i - 1, the recent run where p_i = n - k + i - 1
    SELECT *,
           CASE WHEN k >= n THEN n ELSE list_sum(list_transform(kept, lambda p, i: (p = i - 1)::INTEGER))::INTEGER END AS sink,
           CASE WHEN k >= n THEN 0 ELSE list_sum(list_transform(kept, lambda p, i: (p = n - k + i - 1)::INTEGER))::INTEGER END
               AS recent
    FROM sets
),
labels AS (
    SELECT
        policy_id,
        name || coalesce(' ' || (
            SELECT string_agg(key || '=' || (params::JSON ->> key), ' ' ORDER BY key)
            FROM (SELECT unnest(json_keys(params::JSON)) AS key)
            WHERE key <> 'budget'
        ), '') AS variant,
        CASE WHEN budget_unit = 'ratio' THEN round(100 * budget, 1)::VARCHAR || '%'
             ELSE budget::BIGINT::VARCHAR || ' tokens' END AS budget_label,
        budget, budget_unit, per_head,
        name || ' ' || replace(replace(replace(params, '"', ''), '{', ''), '}', '') || ' [' || policy_id || ']' AS policy
    FROM policies
)
SELECT
    r.sample,
    r.policy_id,
    r.setting,
    coalesce(l.variant, '?') AS variant,
    coalesce(l.budget_label, '?') AS budget_label,
    l.budget,
    coalesce(l.policy, '? [' || r.policy_id || ']') AS policy,
    coalesce(l.per_head, count(DISTINCT r.kept) > 1) AS per_head,
    any_value(r.n_tokens) AS n_tokens,
    any_value(r.n) AS cache_tokens,
    avg(r.k) AS kept_tokens,
    avg(r.sink) AS sink_tokens,
    avg(r.recent) AS recent_tokens,
    avg(r.k - r.sink - r.recent) AS middle_tokens,
    CASE WHEN min(r.sink) >= any_value(r.n) THEN any_value(r.n_tokens) ELSE min(r.sink) END AS sink_end,
    CASE WHEN min(r.sink) >= any_value(r.n) THEN 0 ELSE max(r.n - r.recent) END AS recent_start,
    (avg(r.k) + any_value(r.n_tokens) - any_value(r.n)) / any_value(r.n_tokens) AS kept_share
FROM runs AS r
LEFT JOIN labels AS l USING (policy_id)
GROUP BY r.sample, r.policy_id, r.setting, l.variant, l.budget_label, l.budget, l.policy, l.per_head
ORDER BY r.sample, variant, l.budget, r.setting;
