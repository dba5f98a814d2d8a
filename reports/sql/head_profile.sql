-- head_profile: one row per (sample, layer, kv_head): what each KV head does. Where its attention goes
-- (attn_received of the last-window queries: share on the first 4 tokens = sink, on the last 64 = local,
-- and the entropy of the whole distribution over log(n), 0 = one token, 1 = uniform) and its cache
-- statistics from layer_stats. Sample '(all)' averages every sample of the run.
WITH attention AS (
    SELECT
        ts.run_id, ts.task, ts.sample_id, ts.layer, ts.kv_head,
        sum(ts.attn_received) FILTER (WHERE ts.position < 4) AS sink_share,
        sum(ts.attn_received) FILTER (WHERE ts.position >= s.n_tokens - 64) AS local_share,
        -sum(ts.attn_received * ln(greatest(ts.attn_received, 1e-12))) / ln(greatest(any_value(s.n_tokens), 2))
            AS attention_entropy
    FROM token_stats AS ts
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE ts.run_id = $run_id
    GROUP BY ALL
),
per_sample AS (
    SELECT
        s.sample, l.layer, l.kv_head,
        a.sink_share, a.local_share, a.attention_entropy,
        l.key_std, l.value_std, l.key_sparsity, l.kv_correlation, l.key_absmax
    FROM layer_stats AS l
    JOIN attention AS a USING (run_id, task, sample_id, layer, kv_head)
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE l.run_id = $run_id
)
SELECT * FROM per_sample WHERE sample IN (SELECT sample FROM sample_labels WHERE run_id = $run_id AND shown)
UNION ALL
SELECT '(all)', layer, kv_head, avg(COLUMNS(* EXCLUDE (sample, layer, kv_head)))
FROM per_sample
GROUP BY layer, kv_head
ORDER BY sample = '(all)' DESC, sample, layer, kv_head;
