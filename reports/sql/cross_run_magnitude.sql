-- cross_run_magnitude: one row per (run_id, layer, tensor) for the runs cross_run_runs offers:
-- the mean key (value) norm over every token of every sample, and the lowest / highest KV head's mean.
WITH chosen AS (
    SELECT run_id FROM samples GROUP BY run_id ORDER BY count(*) DESC, run_id LIMIT 8
),
per_head AS (
    SELECT run_id, layer, kv_head, avg(key_norm) AS k, avg(value_norm) AS v
    FROM token_stats
    WHERE run_id IN (SELECT run_id FROM chosen)
    GROUP BY run_id, layer, kv_head
)
SELECT run_id, layer, 'key' AS tensor, avg(k) AS norm, min(k) AS lowest_head, max(k) AS highest_head
FROM per_head GROUP BY run_id, layer
UNION ALL
SELECT run_id, layer, 'value' AS tensor, avg(v) AS norm, min(v) AS lowest_head, max(v) AS highest_head
FROM per_head GROUP BY run_id, layer
ORDER BY run_id, tensor, layer;
