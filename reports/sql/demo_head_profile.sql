-- demo_head_profile: one row per (layer, q_head) of the newest demo run of the model of run $run_id: where
-- each query head's attention goes over a long LongBench context (demo_head_stats: shares on the sink,
-- the previous token and the 16 latest keys, the mean distance attended, the normalised entropy), with
-- the KV head it reads and a label naming both. Empty when no demo run has this model.
WITH demo AS (
    SELECT run_id
    FROM demo_head_stats
    WHERE model = (SELECT any_value(model) FROM samples WHERE run_id = $run_id)
    ORDER BY created_at DESC, run_id
    LIMIT 1
)
SELECT
    layer,
    q_head,
    kv_head,
    'q' || q_head || ' · KV ' || kv_head AS head,
    sink_share,
    previous_share,
    local_share,
    mean_distance,
    entropy,
    tokens,
    source
FROM demo_head_stats
WHERE run_id = (SELECT run_id FROM demo)
ORDER BY layer, q_head;
