-- quality_scores: one row per (run_id, model, task, setting, policy_id): kept-versus-evicted quality
-- averaged over the task's evaluated samples. Score vs budget per policy and task in one line:
--   SELECT task, policy, budget, score, score_full FROM quality_scores ORDER BY task, policy, budget;
-- score / score_full: LongBench metric x100 with the evicted / full cache; score_drop = score_full - score;
-- nll_increase = answer_nll - answer_nll_full (nats per answer token); kl = KL(full || evicted);
-- kept_share = cached positions kept (the question included when it is fed after eviction).
CREATE OR REPLACE VIEW quality_scores AS
WITH labeled AS (
    SELECT q.*, p.name AS policy, p.params, p.budget_unit, p.per_head
    FROM quality AS q
    LEFT JOIN policies AS p USING (policy_id)
)
SELECT
    run_id, model, task, any_value(metric) AS metric, setting, policy_id, policy, params, budget, budget_unit,
    per_head,
    count(*)                                        AS samples,
    avg(score)                                      AS score,
    avg(score_full)                                 AS score_full,
    avg(score_full - score)                         AS score_drop,
    avg(answer_nll)                                 AS answer_nll,
    avg(answer_nll_full)                            AS answer_nll_full,
    avg(answer_nll - answer_nll_full)               AS nll_increase,
    avg(kl)                                         AS kl,
    avg(kept_tokens::DOUBLE / n_tokens)             AS kept_share,
    avg(kept_tokens)                                AS kept_tokens,
    avg(n_tokens)                                   AS n_tokens,
    avg(decode_seconds)                             AS decode_seconds,
    avg(decode_seconds_full)                        AS decode_seconds_full
FROM labeled
GROUP BY run_id, model, task, setting, policy_id, policy, params, budget, budget_unit, per_head;
