-- demo_prefix_reuse: one row per (question, way) of a demo run's prefix-reuse comparison: seconds to
-- prefill the question from scratch (context + question) or on a copy of the cached context (question
-- only), the one-time cost of the shared context, the answers both ways and their max |logit difference|.
SELECT
    question_index,
    'Q' || (question_index + 1) || ': '
        || trim(replace(replace(replace(question, chr(10), ' '), 'Question:', ''), 'Answer:', '')) AS question,
    way,
    seconds,
    prefix_tokens,
    question_tokens,
    seconds_prefix,
    max_abs_diff,
    answer_full,
    answer_reuse,
    answer_full = answer_reuse AS same_answer
FROM (
    UNPIVOT (
        SELECT *, seconds_full AS "from scratch", seconds_reuse AS "reusing the cached context"
        FROM demo_prefix
        WHERE run_id = $run_id
    ) ON "from scratch", "reusing the cached context" INTO NAME way VALUE seconds
)
ORDER BY question_index, way;
