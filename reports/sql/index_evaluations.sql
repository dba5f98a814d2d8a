-- index_evaluations: one row per (run_id, policy name) that has quality rows: how many policy settings,
-- budgets, cache settings and samples were evaluated, and whether keep-sets (rankings) exist for the run.
WITH q AS (
    SELECT q.run_id, p.name AS policy, q.policy_id, q.budget, q.setting, q.task, q.sample_id
    FROM quality AS q
    LEFT JOIN policies AS p USING (policy_id)
),
ranked AS (
    SELECT run_id, count(DISTINCT ranking_id) AS rankings FROM rankings GROUP BY run_id
)
SELECT
    q.run_id,
    coalesce(q.policy, '(unknown policy)') AS policy,
    count(DISTINCT q.policy_id) AS policy_ids,
    count(DISTINCT q.budget) AS budgets,
    string_agg(DISTINCT q.setting, ', ' ORDER BY q.setting) AS settings,
    count(DISTINCT (q.task, q.sample_id)) AS samples,
    count(*) AS rows,
    coalesce(any_value(r.rankings), 0) AS rankings_of_run
FROM q
LEFT JOIN ranked AS r USING (run_id)
GROUP BY q.run_id, q.policy
ORDER BY q.run_id, policy;
