-- quantization_error_by_layer: one row per (sample, layer, format, tensor): the relative error of a
-- per-token int8 / int4 / fp8 round trip of keys and values (layer_stats), mean over KV heads with the
-- lowest and highest head. Sample '(all)' averages every sample of the run.
WITH base AS (
    SELECT
        s.sample, l.layer, l.kv_head,
        l.key_int8_error, l.value_int8_error, l.key_int4_error, l.value_int4_error,
        l.key_fp8_error, l.value_fp8_error
    FROM layer_stats AS l
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE l.run_id = $run_id
),
long AS (
    UNPIVOT base ON COLUMNS(* EXCLUDE (sample, layer, kv_head)) INTO NAME stat VALUE error
),
with_all AS (
    SELECT sample, layer, kv_head, stat, error FROM long WHERE sample IN (SELECT sample FROM sample_labels WHERE run_id = $run_id AND shown)
    UNION ALL
    SELECT '(all)', layer, kv_head, stat, avg(error) FROM long GROUP BY ALL
)
SELECT
    sample, layer,
    split_part(stat, '_', 2) AS format,
    split_part(stat, '_', 1) AS tensor,
    avg(error) AS error,
    min(error) AS lowest_head,
    max(error) AS highest_head
FROM with_all
GROUP BY 1, 2, 3, 4
ORDER BY sample = '(all)' DESC, sample, format, tensor, layer;
