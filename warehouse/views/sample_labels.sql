-- sample_labels: one row per (run_id, task, sample_id), with `sample`, the short label the reports'
-- dropdowns show: the task name, plus the first 8 characters of the sample id when a task has
-- several samples in the run. Token ranges come along so charts can mark segments.
CREATE OR REPLACE VIEW sample_labels AS
SELECT
    run_id, model, task, sample_id, n_tokens, truncated,
    context_start, context_end, question_start, question_end,
    task || CASE WHEN count(*) OVER (PARTITION BY run_id, task) > 1 THEN '/' || left(sample_id, 8) ELSE '' END
        AS sample
FROM samples;
