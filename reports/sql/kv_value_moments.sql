-- kv_value_moments: one row per (layer, tensor): the shape of the entry distribution of the run's raw
-- K/V sample: std, excess kurtosis (heavy tails: a few huge entries) and the largest |entry|.
WITH entries AS (
    SELECT layer, unnest(key) AS k, unnest(value) AS v
    FROM kv
    WHERE run_id = $run_id
)
SELECT layer, 'key' AS tensor, stddev_pop(k) AS std, kurtosis_pop(k) AS kurtosis, max(abs(k)) AS absmax
FROM entries
GROUP BY layer
UNION ALL
SELECT layer, 'value', stddev_pop(v), kurtosis_pop(v), max(abs(v))
FROM entries
GROUP BY layer
ORDER BY tensor, layer;
