-- kv_layer_statistics: one row per (sample, layer, stat): the mean over KV heads of each cache
-- statistic of layer_stats, with the lowest and highest head. Sample '(all)' averages every sample
-- of the run first. stat: key/value sparsity, std, mean |x|; K-V correlation of entries and of norms.
WITH base AS (
    SELECT
        s.sample, l.layer, l.kv_head,
        l.key_sparsity, l.value_sparsity, l.key_std, l.value_std, l.key_absmean, l.value_absmean,
        l.kv_correlation, l.kv_norm_correlation
    FROM layer_stats AS l
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE l.run_id = $run_id
),
long AS (
    UNPIVOT base ON COLUMNS(* EXCLUDE (sample, layer, kv_head)) INTO NAME stat VALUE value
),
with_all AS (
    SELECT sample, layer, kv_head, stat, value FROM long WHERE sample IN (SELECT sample FROM sample_labels WHERE run_id = $run_id AND shown)
    UNION ALL
    SELECT '(all)', layer, kv_head, stat, avg(value) FROM long GROUP BY ALL
)
SELECT
    sample,
    layer,
    CASE
        WHEN stat LIKE '%sparsity' THEN 'sparsity'
        WHEN stat LIKE '%std' THEN 'standard deviation'
        WHEN stat LIKE '%absmean' THEN 'mean |x|'
        ELSE 'key-value correlation'
    END AS metric,
    CASE stat
        WHEN 'kv_correlation' THEN 'entries'
        WHEN 'kv_norm_correlation' THEN 'token norms'
        ELSE split_part(stat, '_', 1)
    END AS tensor,
    avg(value) AS mean,
    min(value) AS lowest_head,
    max(value) AS highest_head
FROM with_all
GROUP BY 1, 2, 3, 4
ORDER BY sample = '(all)' DESC, sample, metric, tensor, layer;
