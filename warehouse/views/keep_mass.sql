-- keep_mass: one row per (run_id, task, sample_id, policy_id, setting, layer, kv_head).
-- Model-free proxies of what an eviction costs: the share of the observed attention mass
-- (attn_received: what the last window of the whole prompt pays to each position) and of the key-norm
-- mass that the kept positions hold, beside the tokens kept. 1.0 = nothing that matters was evicted.
CREATE OR REPLACE VIEW keep_mass AS
SELECT
    k.run_id, k.model, k.task, k.sample_id, k.policy_id, p.name AS policy, p.budget, p.budget_unit, k.setting,
    k.layer, k.kv_head,
    count(*) FILTER (WHERE k.kept)                                         AS kept_tokens,
    count(*)                                                               AS n_tokens,
    (count(*) FILTER (WHERE k.kept) / count(*))::DOUBLE                    AS kept_share,
    sum(t.attn_received) FILTER (WHERE k.kept) / nullif(sum(t.attn_received), 0) AS attn_mass_kept,
    sum(t.key_norm::DOUBLE) FILTER (WHERE k.kept) / nullif(sum(t.key_norm::DOUBLE), 0) AS key_norm_mass_kept
FROM keep AS k
JOIN token_stats AS t USING (run_id, model, task, sample_id, layer, kv_head, position)
LEFT JOIN policies AS p USING (policy_id)
GROUP BY ALL;

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
