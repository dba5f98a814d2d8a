-- cross_run_quality: one row per (run_id, policy, budget, setting) evaluated in `quality`, for the runs
-- cross_run_runs offers: mean KL(full || evicted) and the mean share of the cache kept, over samples.
WITH chosen AS (
    SELECT run_id FROM samples GROUP BY run_id ORDER BY count(*) DESC, run_id LIMIT 8
)
SELECT
    q.run_id,
    coalesce(p.name, q.policy_id) AS policy,
    q.setting,
    q.budget,
    avg(q.kept_tokens / nullif(q.n_tokens, 0)) AS kept_share,
    avg(q.kl) AS kl,
    count(*) AS samples
FROM quality AS q
LEFT JOIN policies AS p USING (policy_id)
WHERE q.run_id IN (SELECT run_id FROM chosen) AND q.kl IS NOT NULL
GROUP BY q.run_id, policy, q.setting, q.budget
ORDER BY q.run_id, policy, q.setting, kept_share;
