-- kv_channel_absmean: one row per (layer, kv_head, channel) of the run: mean |x| of key and of value
-- entries over every sampled position of every sample (2 decimals). Outlier channels show as bright columns.
WITH entries AS (
    SELECT
        layer, kv_head,
        unnest(generate_series(0, len(key) - 1)) AS channel,
        unnest(key) AS k,
        unnest(value) AS v
    FROM kv
    WHERE run_id = $run_id
)
SELECT layer, kv_head, channel, round(avg(abs(k)), 2) AS key_absmean, round(avg(abs(v)), 2) AS value_absmean
FROM entries
GROUP BY ALL
ORDER BY ALL;
