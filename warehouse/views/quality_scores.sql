-- quality_scores: one row per (run_id, model, task, setting, policy_id): kept-versus-evicted quality
-- averaged over the task's evaluated samples (plain means over quality_samples: NULLs skipped, each measure
-- with its own n; `kvw compare` and report 13 add bootstrap intervals). Score vs budget per policy and task:
--   SELECT task, label, budget, score, score_full FROM quality_scores ORDER BY task, label, budget;
-- score / score_full: LongBench metric x100 with the evicted / full cache; score_drop = score_full - score;
-- nll_increase, kl, kl_continuation: as in quality_samples (question_aware: over the steps after the first);
-- kept_share = cached positions kept (the question included when it is fed after eviction).
CREATE OR REPLACE VIEW quality_scores AS
SELECT
    run_id, model, task, any_value(category) AS category, any_value(metric) AS metric, setting, policy_id, policy,
    label, variant, params, budget, budget_unit, per_head,
    count(*)                                        AS samples,
    avg(score)                                      AS score,
    avg(score_full)                                 AS score_full,
    avg(-score_change)                              AS score_drop,
    avg(answer_nll)                                 AS answer_nll,
    avg(answer_nll_full)                            AS answer_nll_full,
    avg(nll_increase)                               AS nll_increase,
    avg(kl)                                         AS kl,
    count(kl)                                       AS kl_samples,
    avg(kl_continuation)                            AS kl_continuation,
    count(kl_continuation)                          AS kl_continuation_samples,
    avg(kept_share)                                 AS kept_share,
    avg(kept_tokens)                                AS kept_tokens,
    avg(n_tokens)                                   AS n_tokens,
    avg(decode_seconds)                             AS decode_seconds,
    avg(decode_seconds_full)                        AS decode_seconds_full
FROM quality_samples
GROUP BY run_id, model, task, setting, policy_id, policy, label, variant, params, budget, budget_unit, per_head;
