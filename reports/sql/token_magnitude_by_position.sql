-- token_magnitude_by_position: one row per (sample, position bucket of $bucket tokens): mean key and
-- value norm of its tokens (token_summary), the attention they receive in total, and the text of the
-- bucket's highest-key-norm token. The shape of these curves is what position-based pruning bets on.
SELECT
    s.sample,
    (ts.position // $bucket) * $bucket AS position,
    least(s.n_tokens, (ts.position // $bucket + 1) * $bucket) - 1 AS last_position,
    avg(ts.key_norm) AS key_norm,
    avg(ts.value_norm) AS value_norm,
    sum(ts.attn_received) AS attn_received,
    token_label(arg_max(ts.token_text, ts.key_norm)) AS top_token,
    arg_max(ts.position, ts.key_norm) AS top_position
FROM token_summary AS ts
JOIN sample_labels AS s USING (run_id, task, sample_id)
WHERE ts.run_id = $run_id AND s.shown
GROUP BY s.sample, s.n_tokens, ts.position // $bucket
ORDER BY s.sample, position;
