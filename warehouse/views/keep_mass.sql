-- keep_mass: one row per (run_id, task, sample_id, policy_id, setting, layer, kv_head).
-- Model-free proxies of what an eviction costs: the share of the observed attention mass
-- (attn_received: what the last window of the whole prompt pays to each position) and of the key-norm
-- mass that the kept positions hold, beside the tokens kept. 1.0 = nothing that matters was evicted.
-- Computed from the keep-set lists (keep_sets) and one list of each statistic per (sample, layer, KV head),
-- not by expanding every budget to per-position rows and joining token_stats per row: that took minutes on
-- a 12-sample sweep. Positions after the cache (fed later, always kept) count as kept.
CREATE OR REPLACE VIEW keep_mass AS
WITH stats AS (
    SELECT run_id, task, sample_id, layer, kv_head,
           list(attn_received::DOUBLE ORDER BY position) AS attn,
           list(key_norm::DOUBLE ORDER BY position)      AS knorm
    FROM token_stats
    GROUP BY ALL
)
SELECT
    k.run_id, k.model, k.task, k.sample_id, k.policy_id, p.name AS policy, p.budget, p.budget_unit, k.setting,
    k.layer, k.kv_head,
    k.k + k.n_tokens - k.n                                                 AS kept_tokens,
    k.n_tokens,
    ((k.k + k.n_tokens - k.n) / k.n_tokens)::DOUBLE                         AS kept_share,
    (coalesce(list_sum(list_transform(k.kept_positions, lambda q: s.attn[q + 1])), 0)
        + coalesce(list_sum(list_slice(s.attn, k.n + 1, k.n_tokens)), 0)) / nullif(list_sum(s.attn), 0)
                                                                            AS attn_mass_kept,
    (coalesce(list_sum(list_transform(k.kept_positions, lambda q: s.knorm[q + 1])), 0)
        + coalesce(list_sum(list_slice(s.knorm, k.n + 1, k.n_tokens)), 0)) / nullif(list_sum(s.knorm), 0)
                                                                            AS key_norm_mass_kept
FROM keep_sets AS k
JOIN stats AS s USING (run_id, task, sample_id, layer, kv_head)
LEFT JOIN policies AS p USING (policy_id);

-- keep_summary: one row per (run_id, task, sample_id, policy_id, setting): keep_mass averaged over
-- every layer and KV head, with the policy's label. "Which policy keeps the most attention at 25%?"
CREATE OR REPLACE VIEW keep_summary AS
SELECT
    run_id, model, task, sample_id, policy_id, policy, budget, budget_unit, setting,
    avg(kept_tokens)         AS kept_tokens,
    any_value(n_tokens)      AS n_tokens,
    avg(kept_share)          AS kept_share,
    avg(attn_mass_kept)      AS attn_mass_kept,
    avg(key_norm_mass_kept)  AS key_norm_mass_kept
FROM keep_mass
GROUP BY ALL;
