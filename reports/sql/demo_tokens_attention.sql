-- demo_tokens_attention: one row per position of a demo run's `attention` prompt: the token text
-- (visible whitespace), for axis labels and tooltips.
SELECT position, token_label(token_text) AS token, lpad(position::VARCHAR, 2, '0') || ' ' || token_label(token_text) AS label
FROM demo_tokens
WHERE run_id = $run_id AND prompt = 'attention'
ORDER BY position;
