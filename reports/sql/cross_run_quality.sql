-- cross_run_quality: one row per (run_id, policy label, budget, setting) evaluated, for the runs
-- cross_run_runs offers: mean KL(full || evicted) over the answer and the mean share of the cache kept, over
-- samples. Read through quality_samples, as report 13 and `kvw compare` are: a policy is its label (name plus
-- the parameters that tell its variants apart), and a KL that is NULL there (one-token answers in
-- question_aware, equal to the full cache's by construction) is left out, not averaged in as 0.
WITH chosen AS (
    SELECT run_id FROM samples GROUP BY run_id ORDER BY count(*) DESC, run_id LIMIT 8
)
SELECT
    q.run_id,
    q.label AS policy,
    q.setting,
    q.budget,
    avg(q.kept_share) AS kept_share,
    avg(q.kl) AS kl,
    count(*) AS samples
FROM quality_samples AS q
WHERE q.run_id IN (SELECT run_id FROM chosen) AND q.kl IS NOT NULL
GROUP BY q.run_id, q.label, q.setting, q.budget
ORDER BY q.run_id, policy, q.setting, kept_share;
