-- index_tasks: one row per (run_id, task): samples, how many were truncated, and their token lengths.
SELECT
    run_id, task,
    count(*) AS samples,
    count(*) FILTER (WHERE truncated) AS truncated,
    min(n_tokens) AS min_tokens,
    median(n_tokens)::INTEGER AS median_tokens,
    max(n_tokens) AS max_tokens,
    max(n_tokens_original) AS longest_before_truncation
FROM samples
GROUP BY run_id, task
ORDER BY run_id, task;
