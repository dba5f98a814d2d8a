-- demo_projection_norms: one row per (kind, head, position) of a demo run's projection layer: the L2
-- norm of the head's query / key / value vector (after q/k/v_proj, before RoPE) and of its attention
-- output (the input of o_proj), with the KV head it belongs to, for the attention prompt's tokens.
SELECT
    p.layer,
    p.kind,
    p.head,
    p.kv_head,
    upper(p.kind) || p.head AS row_label,
    p.position,
    token_label(t.token_text) AS token,
    p.norm
FROM demo_projections AS p
JOIN demo_tokens AS t ON t.run_id = p.run_id AND t.prompt = 'attention' AND t.position = p.position
WHERE p.run_id = $run_id
ORDER BY p.kv_head, CASE p.kind WHEN 'q' THEN 0 WHEN 'k' THEN 1 WHEN 'v' THEN 2 ELSE 3 END, p.head, p.position;
