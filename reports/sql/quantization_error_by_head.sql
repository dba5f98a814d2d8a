-- quantization_error_by_head: one row per (layer, kv_head, format, tensor): relative round-trip error
-- averaged over every sample of the run, to spot the heads that resist low precision.
WITH long AS (
    UNPIVOT (
        SELECT layer, kv_head, key_int8_error, value_int8_error, key_int4_error, value_int4_error,
               key_fp8_error, value_fp8_error
        FROM layer_stats
        WHERE run_id = $run_id
    ) ON COLUMNS(* EXCLUDE (layer, kv_head)) INTO NAME stat VALUE error
)
SELECT layer, kv_head, split_part(stat, '_', 2) AS format, split_part(stat, '_', 1) AS tensor, avg(error) AS error
FROM long
GROUP BY 1, 2, 3, 4
ORDER BY format, tensor, layer, kv_head;
