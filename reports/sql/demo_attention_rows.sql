-- demo_attention_rows: one row per (layer, q_head, query_pos) of a demo run's `attention` prompt: the
-- eager-attention weights of that query over key positions 0..query_pos as a list (4 decimals), with
-- the KV head the query head reads. Lists keep the page small; the chart flattens them.
SELECT
    layer,
    q_head,
    any_value(kv_head) AS kv_head,
    query_pos,
    list(round(weight::DOUBLE, 4) ORDER BY key_pos) AS weights
FROM demo_attention
WHERE run_id = $run_id
GROUP BY layer, q_head, query_pos
ORDER BY layer, q_head, query_pos;
