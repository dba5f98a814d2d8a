-- token_magnitude_by_group: one row per (sample, grouping, group, tensor): the distribution of per-token
-- key / value norms (token_summary: mean over layers and KV heads) within each token category or prompt
-- segment, as box-plot numbers (5th, 25th, 50th, 75th, 95th percentile, count). Sample '(all)' pools
-- every sample of the run.
WITH t AS (
    SELECT s.sample, ts.category, ts.segment, ts.key_norm, ts.value_norm
    FROM token_summary AS ts
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE ts.run_id = $run_id
),
pooled AS (
    SELECT * FROM t WHERE sample IN (SELECT sample FROM sample_labels WHERE run_id = $run_id AND shown)
    UNION ALL
    SELECT '(all)', category, segment, key_norm, value_norm FROM t
),
long AS (
    SELECT sample, 'category' AS grouping, category AS grp, 'key' AS tensor, key_norm AS x FROM pooled
    UNION ALL SELECT sample, 'category', category, 'value', value_norm FROM pooled
    UNION ALL SELECT sample, 'segment', segment, 'key', key_norm FROM pooled
    UNION ALL SELECT sample, 'segment', segment, 'value', value_norm FROM pooled
)
SELECT
    sample, grouping, grp AS "group", tensor,
    count(*) AS tokens,
    quantile_cont(x, 0.05) AS p05,
    quantile_cont(x, 0.25) AS p25,
    quantile_cont(x, 0.50) AS median,
    quantile_cont(x, 0.75) AS p75,
    quantile_cont(x, 0.95) AS p95
FROM long
GROUP BY 1, 2, 3, 4
ORDER BY sample = '(all)' DESC, sample, grouping, "group", tensor;
