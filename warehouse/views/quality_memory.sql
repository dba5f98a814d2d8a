-- quality_memory: one row per (run_id, model, setting, policy_id): K/V cache memory saved by a policy
-- and what it cost, over every evaluated sample. "How much memory does it save, at what quality?":
--   SELECT policy, budget, mib_saved_per_sample, saved_share, score_drop FROM quality_memory ORDER BY saved_share DESC;
-- Bytes are the K/V tensors of every layer and KV head at the model's dtype (question tokens included).
-- kl, kl_continuation as in quality_samples (NULLs skipped).
CREATE OR REPLACE VIEW quality_memory AS
SELECT
    run_id, model, setting, policy_id, policy, label, params, budget, budget_unit,
    count(*)                                                   AS samples,
    sum(kv_bytes_full)                                         AS kv_bytes_full,
    sum(kv_bytes_kept)                                         AS kv_bytes_kept,
    sum(kv_bytes_full - kv_bytes_kept)                         AS kv_bytes_saved,
    avg(kv_bytes_full - kv_bytes_kept) / 2^20                  AS mib_saved_per_sample,
    1 - sum(kv_bytes_kept)::DOUBLE / nullif(sum(kv_bytes_full), 0) AS saved_share,
    avg(-score_change)                                         AS score_drop,
    avg(kl)                                                    AS kl,
    avg(kl_continuation)                                       AS kl_continuation
FROM quality_samples
GROUP BY ALL;
