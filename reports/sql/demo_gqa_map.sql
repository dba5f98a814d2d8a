-- demo_gqa_map: one row per query head of a demo run's model: the KV head whose keys and values it
-- uses under grouped-query attention, and where that KV head sits among the query heads (for drawing).
SELECT DISTINCT
    q_head,
    kv_head,
    avg(q_head) OVER (PARTITION BY kv_head) AS kv_center
FROM (SELECT DISTINCT q_head, kv_head FROM demo_attention WHERE run_id = $run_id)
ORDER BY q_head;
