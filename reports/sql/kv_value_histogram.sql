-- kv_value_histogram: one row per (layer, tensor, bin): how many key / value entries of the run's raw
-- K/V sample fall in each of $bins equal-width bins between that layer's smallest and largest entry.
WITH ranges AS (
    SELECT
        layer,
        min(list_min(key))::DOUBLE AS k_lo, max(list_max(key))::DOUBLE AS k_hi,
        min(list_min(value))::DOUBLE AS v_lo, max(list_max(value))::DOUBLE AS v_hi
    FROM kv
    WHERE run_id = $run_id
    GROUP BY layer
),
binned AS (
    SELECT
        layer, k_lo, k_hi, v_lo, v_hi,
        unnest(list_transform(key, lambda x: floor((x - k_lo) / greatest(k_hi - k_lo, 1e-9) * $bins))) AS k_bin,
        unnest(list_transform(value, lambda x: floor((x - v_lo) / greatest(v_hi - v_lo, 1e-9) * $bins))) AS v_bin
    FROM kv
    JOIN ranges USING (layer)
    WHERE run_id = $run_id
),
long AS (
    SELECT layer, 'key' AS tensor, k_lo AS lo, k_hi AS hi, least($bins - 1, k_bin)::INTEGER AS bin FROM binned
    UNION ALL
    SELECT layer, 'value', v_lo, v_hi, least($bins - 1, v_bin)::INTEGER FROM binned
)
SELECT
    layer, tensor, bin,
    lo + bin * (hi - lo) / $bins AS bin_start,
    lo + (bin + 1) * (hi - lo) / $bins AS bin_end,
    count(*) AS entries
FROM long
GROUP BY layer, tensor, bin, lo, hi
ORDER BY layer, tensor, bin;
