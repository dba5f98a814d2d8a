-- strategy_quality: one row per (task, setting, policy_id) of the run's `quality` rows, plus task
-- '(all tasks)' over every evaluated sample: LongBench score with the evicted and with the full cache,
-- answer NLL increase, KL(full || evicted), share of cache positions kept and K/V memory saved.
-- One more row per (task, setting), policy 'full cache': the reference point (everything kept).
WITH q AS (
    SELECT q.*, coalesce(p.name, '?') AS policy, p.params, p.budget_unit
    FROM quality AS q
    LEFT JOIN policies AS p USING (policy_id)
    WHERE q.run_id = $run_id
),
tagged AS (
    SELECT task, * EXCLUDE (task) FROM q
    UNION ALL
    SELECT '(all tasks)', * EXCLUDE (task) FROM q
),
per_policy AS (
    SELECT
        task,
        setting,
        policy,
        policy_id,
        any_value(params) AS params,
        any_value(budget) AS budget,
        any_value(budget_unit) AS budget_unit,
        count(*) AS samples,
        avg(score) AS score,
        avg(score_full) AS score_full,
        avg(score - score_full) AS score_change,
        avg(answer_nll - answer_nll_full) AS nll_increase,
        avg(kl) AS kl,
        avg(kept_tokens::DOUBLE / nullif(n_tokens, 0)) AS kept_share,
        1 - sum(kv_bytes_kept)::DOUBLE / nullif(sum(kv_bytes_full), 0) AS memory_saved,
        avg(kv_bytes_full - kv_bytes_kept) / 2^20 AS mib_saved
    FROM tagged
    GROUP BY task, setting, policy, policy_id
),
full_cache AS (
    SELECT task, setting, count(*) AS samples, avg(score_full) AS score_full
    FROM (SELECT DISTINCT task, sample_id, setting, score_full FROM tagged)
    GROUP BY task, setting
)
SELECT * FROM per_policy
UNION ALL
SELECT task, setting, 'full cache', 'full', NULL, NULL, NULL, samples, score_full, score_full, 0, 0, 0, 1, 0, 0
FROM full_cache
ORDER BY task = '(all tasks)' DESC, task, setting, policy, kept_share;
