-- demo_head_distance: one row per (layer, q_head, distance bucket) of the newest demo run of the model of
-- run $run_id: the share of a query head's attention at distance 0 (itself), 1, 2-3, 4-7, ... tokens
-- back, averaged over the queries of a long context (demo_head_stats.share_by_distance unnested).
WITH demo AS (
    SELECT run_id
    FROM demo_head_stats
    WHERE model = (SELECT any_value(model) FROM samples WHERE run_id = $run_id)
    ORDER BY created_at DESC, run_id
    LIMIT 1
),
buckets AS (
    SELECT layer, q_head, kv_head, unnest(share_by_distance) AS share,
           generate_subscripts(share_by_distance, 1) - 1 AS bucket
    FROM demo_head_stats
    WHERE run_id = (SELECT run_id FROM demo)
)
SELECT
    layer,
    q_head,
    'q' || q_head || ' · KV ' || kv_head AS head,
    bucket,
    CASE WHEN bucket = 0 THEN 'self' WHEN bucket = 1 THEN '1'
         ELSE (2 ** (bucket - 1))::INTEGER || '–' || (2 ** bucket - 1)::INTEGER END AS distance,
    share
FROM buckets
ORDER BY layer, q_head, bucket;
