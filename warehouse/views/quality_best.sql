-- quality_best: one row per (run_id, model, setting, budget, rank): policies ranked at each budget by
-- their mean score over every evaluated sample (ties: lower KL first; KL as in quality_samples, NULLs
-- skipped). "Best policy per budget":
--   SELECT setting, budget, policy, params, score, score_full FROM quality_best WHERE rank = 1;
CREATE OR REPLACE VIEW quality_best AS
WITH per_policy AS (
    SELECT
        run_id, model, setting, budget, budget_unit, policy_id, policy, label, params,
        count(*)                AS samples,
        count(DISTINCT task)    AS tasks,
        avg(score)              AS score,
        avg(score_full)         AS score_full,
        avg(kl)                 AS kl,
        avg(kl_continuation)    AS kl_continuation,
        avg(nll_increase)       AS nll_increase,
        avg(kept_share)         AS kept_share
    FROM quality_samples
    GROUP BY ALL
)
SELECT
    row_number() OVER (
        PARTITION BY run_id, model, setting, budget ORDER BY score DESC, kl ASC NULLS LAST, policy, policy_id
    ) AS rank,
    *
FROM per_policy;
