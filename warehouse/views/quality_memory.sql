-- quality_memory: one row per (run_id, model, setting, policy_id): K/V cache memory saved by a policy
-- and what it cost, over every evaluated sample. "How much memory does it save, at what quality?":
--   SELECT policy, budget, mib_saved_per_sample, saved_share, score_drop FROM quality_memory ORDER BY saved_share DESC;
-- Bytes are the K/V tensors of every layer and KV head at the model's dtype (question tokens included).
CREATE OR REPLACE VIEW quality_memory AS
SELECT
    q.run_id, q.model, q.setting, q.policy_id, p.name AS policy, p.params, q.budget, p.budget_unit,
    count(*)                                                   AS samples,
    sum(q.kv_bytes_full)                                       AS kv_bytes_full,
    sum(q.kv_bytes_kept)                                       AS kv_bytes_kept,
    sum(q.kv_bytes_full - q.kv_bytes_kept)                     AS kv_bytes_saved,
    avg(q.kv_bytes_full - q.kv_bytes_kept) / 2^20              AS mib_saved_per_sample,
    1 - sum(q.kv_bytes_kept)::DOUBLE / nullif(sum(q.kv_bytes_full), 0) AS saved_share,
    avg(q.score_full - q.score)                                AS score_drop,
    avg(q.kl)                                                  AS kl
FROM quality AS q
LEFT JOIN policies AS p USING (policy_id)
GROUP BY ALL;
