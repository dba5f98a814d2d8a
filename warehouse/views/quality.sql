-- quality.sql: the base of every quality view (applied before quality_best, quality_memory, quality_scores,
-- which read it): the task category macro, policy_labels and quality_samples.

-- longbench_category(task): LongBench's own task grouping (LongBench-E `_e` names map to their base task;
-- `needle`, the synthetic retrieval probe, is synthetic; anything else is 'other'). The one place it is spelled.
CREATE OR REPLACE MACRO longbench_category(task) AS
    CASE regexp_replace(task, '_e$', '')
        WHEN 'narrativeqa' THEN 'single-doc QA' WHEN 'qasper' THEN 'single-doc QA'
        WHEN 'multifieldqa_en' THEN 'single-doc QA' WHEN 'multifieldqa_zh' THEN 'single-doc QA'
        WHEN 'hotpotqa' THEN 'multi-doc QA' WHEN '2wikimqa' THEN 'multi-doc QA'
        WHEN 'musique' THEN 'multi-doc QA' WHEN 'dureader' THEN 'multi-doc QA'
        WHEN 'gov_report' THEN 'summarization' WHEN 'qmsum' THEN 'summarization'
        WHEN 'multi_news' THEN 'summarization' WHEN 'vcsum' THEN 'summarization'
        WHEN 'trec' THEN 'few-shot' WHEN 'triviaqa' THEN 'few-shot'
        WHEN 'samsum' THEN 'few-shot' WHEN 'lsht' THEN 'few-shot'
        WHEN 'passage_count' THEN 'synthetic' WHEN 'passage_retrieval_en' THEN 'synthetic'
        WHEN 'passage_retrieval_zh' THEN 'synthetic' WHEN 'needle' THEN 'synthetic'
        WHEN 'lcc' THEN 'code' WHEN 'repobench-p' THEN 'code'
        ELSE 'other'
    END;

-- policy_labels: one row per policy_id. A policy is its policy_id and its label, never its name alone:
-- `variant` is the name plus every parameter but the budget (the curve a policy draws across budgets),
-- `label` the name alone where the catalog has one variant of it, else name(parameters but the budget).
CREATE OR REPLACE VIEW policy_labels AS
WITH p AS (
    SELECT DISTINCT ON (policy_id)
        policy_id, name, params, budget, budget_unit, per_head,
        json_merge_patch(coalesce(params, '{}'), '{"budget": null}')::VARCHAR AS variant_params
    FROM policies
    ORDER BY policy_id, created_at DESC
),
shown AS (
    SELECT *, replace(replace(regexp_replace(variant_params, '[{}" ]', '', 'g'), ':', '='), ',', ', ') AS args
    FROM p
)
SELECT
    policy_id, name, params, budget, budget_unit, per_head,
    name || '/' || left(md5(variant_params), 8) AS variant,
    CASE WHEN count(DISTINCT variant_params) OVER (PARTITION BY name) > 1 AND args <> ''
         THEN name || '(' || args || ')' ELSE name END AS label
FROM shown;

-- quality_samples: one row per (run_id, task, sample_id, policy_id, setting): the one place quality is
-- defined for aggregation (`kvw compare`, report 13, quality_scores, quality_best and quality_memory all read
-- it; warehouse/quality_stats.py adds seeded bootstrap intervals). Measures (lower is better except score):
--   kl_continuation  mean KL(full || evicted) along the full cache's own greedy answer (reference-free)
--   kl               mean KL(full || evicted) over the reference answer's tokens
--   nll_increase     answer_nll - answer_nll_full (nats per reference-answer token)
--   score_change     LongBench score, evicted - full (x100)
-- In question_aware the first answer token is predicted by the full prefill under every policy, so its KL and
-- NLL difference are 0 by construction: here the KLs and nll_increase average over the steps after it
-- (stored mean x m / (m - 1), exact since step 0 is exactly 0), and a one-token answer is NULL with a reason
-- (`answer_null_reason`, `continuation_null_reason`), never 0. Averages skip NULLs.
CREATE OR REPLACE VIEW quality_samples AS
WITH q AS (
    SELECT
        q.*, l.name AS policy, l.label, l.variant, l.params, l.budget_unit, l.per_head,
        longbench_category(q.task) AS category,
        CASE WHEN q.setting = 'question_aware' THEN 1 ELSE 0 END AS shared_steps
    FROM quality AS q
    LEFT JOIN policy_labels AS l USING (policy_id)
),
reasons AS (
    SELECT
        *,
        CASE
            WHEN coalesce(answer_tokens, 0) = 0 OR answer_nll IS NULL THEN 'no reference answer'
            WHEN answer_tokens <= shared_steps
                THEN 'one-token answer: predicted by the full prefill under every policy (question_aware)'
        END AS answer_null_reason,
        CASE
            WHEN continuation_tokens IS NULL OR kl_continuation IS NULL
                THEN 'not measured: row written before kl_continuation existed'
            WHEN continuation_tokens <= shared_steps
                THEN 'one-token continuation: predicted by the full prefill under every policy (question_aware)'
        END AS continuation_null_reason
    FROM q
)
SELECT
    run_id, model, task, category, sample_id, setting, policy_id, policy, label, variant, params, budget,
    budget_unit, per_head, metric,
    kept_tokens, n_tokens, evicted_layers,
    kept_tokens::DOUBLE / nullif(n_tokens, 0)                    AS kept_share,
    1 - kv_bytes_kept::DOUBLE / nullif(kv_bytes_full, 0)         AS memory_saved,
    (kv_bytes_full - kv_bytes_kept) / 2^20                       AS mib_saved,
    kv_bytes_kept, kv_bytes_full,
    score, score_full, score - score_full                        AS score_change,
    answer_tokens,
    CASE WHEN answer_null_reason IS NULL
         THEN kl * answer_tokens / (answer_tokens - shared_steps) END                           AS kl,
    CASE WHEN answer_null_reason IS NULL
         THEN (answer_nll - answer_nll_full) * answer_tokens / (answer_tokens - shared_steps) END AS nll_increase,
    answer_nll, answer_nll_full,
    answer_null_reason,
    continuation_tokens,
    CASE WHEN continuation_null_reason IS NULL
         THEN kl_continuation * continuation_tokens / (continuation_tokens - shared_steps) END   AS kl_continuation,
    continuation_null_reason,
    decode_seconds, decode_seconds_full, prefill_seconds, new_tokens, prediction, prediction_full
FROM reasons;
