-- strategy_quality: one row per (task, sample_id, policy_id, setting) of the run: the quality_samples view
-- (every measure NULL with a reason where it is undefined). Report 13's array step aggregates it with
-- warehouse.quality_stats (n, mean, bootstrap 95% interval per category, policy, budget and setting),
-- the same function `kvw compare` prints.
SELECT
    run_id, task, category, sample_id, setting, policy_id, policy, label, variant, budget, budget_unit,
    kept_share, memory_saved, mib_saved, score, score_full, score_change, nll_increase, kl, answer_null_reason,
    kl_continuation, continuation_null_reason
FROM quality_samples
WHERE run_id = $run_id
ORDER BY category, task, sample_id, label, budget, setting;
