-- token_importance_ranked: the $n lowest and the $n highest tokens of each sample by each importance
-- measure (token_summary: key norm, value norm and attention received, each averaged over every layer
-- and KV head), with their text, category and segment, and all three measures for the tooltip.
WITH t AS (
    SELECT s.sample, ts.position, ts.token_text, ts.category, ts.segment, ts.key_norm, ts.value_norm, ts.attn_received
    FROM token_summary AS ts
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE ts.run_id = $run_id AND s.shown
),
long AS (
    SELECT sample, position, measure, score
    FROM (UNPIVOT (SELECT sample, position, key_norm, value_norm, attn_received FROM t)
          ON key_norm, value_norm, attn_received INTO NAME measure VALUE score)
),
ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY sample, measure ORDER BY score ASC, position) AS rank_low,
        row_number() OVER (PARTITION BY sample, measure ORDER BY score DESC, position) AS rank_high
    FROM long
)
SELECT
    r.sample,
    replace(r.measure, '_', ' ') AS measure,
    CASE WHEN r.rank_low <= $n THEN 'lowest' ELSE 'highest' END AS side,
    CASE WHEN r.rank_low <= $n THEN r.rank_low ELSE r.rank_high END AS rank,
    r.position,
    token_label(t.token_text) AS token,
    t.category,
    t.segment,
    r.score,
    t.key_norm,
    t.value_norm,
    t.attn_received
FROM ranked AS r
JOIN t USING (sample, position)
WHERE r.rank_low <= $n OR r.rank_high <= $n
ORDER BY r.sample, measure, side, rank;
