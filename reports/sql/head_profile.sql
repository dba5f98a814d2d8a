-- head_profile: one row per (sample, layer, kv_head) of run $run_id: the statistics of what each KV head
-- stores in the cache (layer_stats: key/value std, key sparsity, key-value correlation, largest |key|).
-- The cache is per KV head; where attention goes is per query head (demo_head_profile). Sample '(all)'
-- averages every sample of the run.
WITH per_sample AS (
    SELECT s.sample, l.layer, l.kv_head, l.key_std, l.value_std, l.key_sparsity, l.kv_correlation, l.key_absmax
    FROM layer_stats AS l
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE l.run_id = $run_id
)
SELECT * FROM per_sample WHERE sample IN (SELECT sample FROM sample_labels WHERE run_id = $run_id AND shown)
UNION ALL
SELECT '(all)', layer, kv_head, avg(COLUMNS(* EXCLUDE (sample, layer, kv_head)))
FROM per_sample
GROUP BY layer, kv_head
ORDER BY sample = '(all)' DESC, sample, layer, kv_head;
