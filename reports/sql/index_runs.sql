-- index_runs: one row per extraction run, the runs with most samples first: what the pages were built on.
-- Lengths are the tokens the model saw (after truncation); max_tokens and window come from the run's
-- recorded parameters (null where the run did not record them).
WITH per_run AS (
    SELECT
        run_id,
        any_value(model) AS model,
        count(*) AS samples,
        count(DISTINCT task) AS tasks,
        count(*) FILTER (WHERE truncated) AS truncated,
        min(n_tokens) AS min_tokens,
        median(n_tokens)::INTEGER AS median_tokens,
        max(n_tokens) AS longest
    FROM samples
    GROUP BY run_id
)
SELECT
    p.run_id, p.model, r.dtype, r.device, r.attn_impl,
    TRY_CAST(json_extract_string(r.parameters, '$.max_tokens') AS INTEGER) AS max_tokens,
    TRY_CAST(json_extract_string(r.parameters, '$.window') AS INTEGER) AS window,
    p.samples, p.tasks, p.truncated, p.min_tokens, p.median_tokens, p.longest,
    strftime(r.finished_at, '%Y-%m-%d %H:%M') AS finished
FROM per_run AS p
LEFT JOIN runs AS r USING (run_id)
ORDER BY p.samples DESC, r.finished_at DESC NULLS LAST, p.run_id;
