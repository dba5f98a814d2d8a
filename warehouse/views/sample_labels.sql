-- sample_labels: one row per (run_id, task, sample_id), with `sample`, the short label the reports'
-- dropdowns show: the task name, plus the first 8 characters of the sample id when a task has
-- several samples in the run. Token ranges come along so charts can mark segments.
-- `shown`: the samples a report offers one by one, at most 24 per run (the first sample of every task,
-- then the second of every task, ...), so a page stays small on a full LongBench run; pooled '(all)'
-- views still use every sample.
CREATE OR REPLACE VIEW sample_labels AS
WITH ordered AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY run_id, task ORDER BY sample_id) AS nth_of_task,
        count(*) OVER (PARTITION BY run_id, task) AS of_task
    FROM samples
)
SELECT
    run_id, model, task, sample_id, n_tokens, truncated,
    context_start, context_end, question_start, question_end,
    task || CASE WHEN of_task > 1 THEN '/' || left(sample_id, 8) ELSE '' END AS sample,
    row_number() OVER (PARTITION BY run_id ORDER BY nth_of_task, task) <= 24 AS shown
FROM ordered;
