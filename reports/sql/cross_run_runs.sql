-- cross_run_runs: one row per extraction run the cross-run page offers (at most 8, most samples first):
-- `rank` 1 and 2 are the two shown by default; `has_quality` says whether the run was evaluated.
WITH per_run AS (
    SELECT run_id, any_value(model) AS model, count(*) AS samples, max(n_tokens) AS longest
    FROM samples
    GROUP BY run_id
),
evaluated AS (
    SELECT DISTINCT run_id FROM quality
)
SELECT
    p.run_id, p.model, p.samples, p.longest,
    TRY_CAST(json_extract_string(r.parameters, '$.max_tokens') AS INTEGER) AS max_tokens,
    row_number() OVER (ORDER BY p.samples DESC, p.run_id) AS rank,
    e.run_id IS NOT NULL AS has_quality,
    p.run_id || ' · ' || regexp_extract(p.model, '[^/]+$')
        || coalesce(' · max ' || json_extract_string(r.parameters, '$.max_tokens') || ' tokens', '')
        || ' · ' || p.samples || ' samples' AS label
FROM per_run AS p
LEFT JOIN runs AS r USING (run_id)
LEFT JOIN evaluated AS e USING (run_id)
ORDER BY rank
LIMIT 8;
