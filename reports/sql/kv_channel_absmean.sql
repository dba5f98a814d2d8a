-- kv_channel_absmean: one row per (layer, kv_head) of the run: mean |x| of key and of value entries per
-- channel (lists ordered by channel, 2 decimals) over every sampled position of every sample. Outlier
-- channels show as bright columns. Lists keep the page small; the chart flattens them.
WITH entries AS (
    SELECT
        layer, kv_head,
        unnest(generate_series(0, len(key) - 1)) AS channel,
        unnest(key) AS k,
        unnest(value) AS v
    FROM kv
    WHERE run_id = $run_id
),
per_channel AS (
    SELECT layer, kv_head, channel, round(avg(abs(k)), 2) AS k, round(avg(abs(v)), 2) AS v
    FROM entries
    GROUP BY ALL
)
SELECT
    layer, kv_head,
    list(k ORDER BY channel) AS key_absmean,
    list(v ORDER BY channel) AS value_absmean
FROM per_channel
GROUP BY layer, kv_head
ORDER BY layer, kv_head;
