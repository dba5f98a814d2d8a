-- quality_best: one row per (run_id, model, setting, budget, rank): policies ranked at each budget by
-- their mean score over every evaluated sample (ties: lower KL first). "Best policy per budget":
--   SELECT setting, budget, policy, params, score, score_full FROM quality_best WHERE rank = 1;
CREATE OR REPLACE VIEW quality_best AS
WITH per_policy AS (
    SELECT
        q.run_id, q.model, q.setting, q.budget, p.budget_unit, q.policy_id, p.name AS policy, p.params,
        count(*)             AS samples,
        count(DISTINCT task) AS tasks,
        avg(q.score)         AS score,
        avg(q.score_full)    AS score_full,
        avg(q.kl)            AS kl,
        avg(q.answer_nll - q.answer_nll_full) AS nll_increase,
        avg(q.kept_tokens::DOUBLE / q.n_tokens) AS kept_share
    FROM quality AS q
    LEFT JOIN policies AS p USING (policy_id)
    GROUP BY ALL
)
SELECT
    row_number() OVER (
        PARTITION BY run_id, model, setting, budget ORDER BY score DESC, kl ASC NULLS LAST, policy, policy_id
    ) AS rank,
    *
FROM per_policy;
