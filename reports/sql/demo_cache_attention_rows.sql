-- demo_cache_attention_rows: one row per (layer, q_head, query_pos) of a demo run's last `cached_queries`
-- queries of the `attention` prompt: the attention weights over keys 0..query_pos computed incrementally
-- against the KV cache (demo_cache_attention) and recomputed over the whole prompt without it
-- (demo_attention), and their absolute difference, as key-ordered lists (the chart flattens them).
-- Weights are rounded to 6 decimals, differences (from the unrounded weights) to 2 significant digits.
SELECT
    c.layer,
    c.q_head,
    any_value(c.kv_head) AS kv_head,
    c.query_pos,
    list(c.key_pos ORDER BY c.key_pos) AS key_pos,
    list(round(c.weight::DOUBLE, 6) ORDER BY c.key_pos) AS with_cache,
    list(round(a.weight::DOUBLE, 6) ORDER BY c.key_pos) AS without_cache,
    list(CASE WHEN c.weight = a.weight THEN 0
              ELSE round(abs(c.weight::DOUBLE - a.weight::DOUBLE),
                         1 - floor(log10(abs(c.weight::DOUBLE - a.weight::DOUBLE)))::INTEGER) END
         ORDER BY c.key_pos) AS abs_diff
FROM demo_cache_attention AS c
JOIN demo_attention AS a USING (run_id, layer, q_head, query_pos, key_pos)
WHERE c.run_id = $run_id
GROUP BY c.layer, c.q_head, c.query_pos
ORDER BY c.layer, c.q_head, c.query_pos;
