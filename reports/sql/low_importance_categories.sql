-- low_importance_categories: one row per (sample, measure, category, tokens): the share of each token
-- category among the lowest $share_low of a sample's tokens by a measure ('lowest') and among all of
-- its tokens ('all'). A category over-represented in 'lowest' is a candidate for aggressive pruning.
WITH t AS (
    SELECT s.sample, ts.position, ts.category, ts.key_norm, ts.value_norm, ts.attn_received
    FROM token_summary AS ts
    JOIN sample_labels AS s USING (run_id, task, sample_id)
    WHERE ts.run_id = $run_id AND s.shown
),
long AS (
    SELECT * FROM (UNPIVOT t ON key_norm, value_norm, attn_received INTO NAME measure VALUE score)
),
ranked AS (
    SELECT *, percent_rank() OVER (PARTITION BY sample, measure ORDER BY score, position) AS pct
    FROM long
),
counted AS (
    SELECT sample, measure, category, 'lowest' AS tokens, count(*) AS n FROM ranked WHERE pct < $share_low GROUP BY ALL
    UNION ALL
    SELECT sample, measure, category, 'all', count(*) FROM ranked GROUP BY ALL
)
SELECT
    sample,
    replace(measure, '_', ' ') AS measure,
    category,
    tokens,
    n,
    n / sum(n) OVER (PARTITION BY sample, measure, tokens) AS share
FROM counted
ORDER BY sample, measure, tokens, category;
