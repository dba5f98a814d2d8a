-- eviction_tokens: one row per (sample, policy_id, setting) for the token zoom: one character per prompt
-- position, the share of the layers x KV heads that keep it, in position order: '0' none, '9' all,
-- '1'..'8' some (round(9 x share), at least 1 and at most 8).
-- Samples as eviction_pattern; the zoom covers the first of them while their characters (tokens x keep-sets)
-- stay under $max_zoom_cells (at least one sample), so a sweep of many policies x budgets keeps the page small.
WITH pairs AS (  -- (policy, setting) keep-sets per sample: the zoom carries one character per token of each
    SELECT run_id, task, sample_id, count(DISTINCT (policy_id, setting)) AS n_pairs
    FROM keep_sets
    WHERE run_id = $run_id
    GROUP BY ALL
),
chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens, s.n_tokens * coalesce(p.n_pairs, 0) AS cells,
           sum(s.n_tokens * coalesce(p.n_pairs, 0)) OVER (ORDER BY s.sample ROWS UNBOUNDED PRECEDING) AS upto
    FROM sample_labels AS s
    LEFT JOIN pairs AS p USING (run_id, task, sample_id)
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
),
zoomed AS (
    SELECT * FROM chosen WHERE upto <= $max_zoom_cells OR upto = cells
),
shares AS (
    SELECT c.sample, k.policy_id, k.setting, k.position, avg(k.kept::INTEGER) AS share
    FROM keep AS k
    JOIN zoomed AS c USING (run_id, task, sample_id)
    GROUP BY ALL
)
SELECT
    sample, policy_id, setting,
    string_agg(
        CASE WHEN share = 0 THEN '0' WHEN share = 1 THEN '9'
             ELSE chr(48 + least(8, greatest(1, round(9 * share)))::INTEGER) END,
        '' ORDER BY position
    ) AS kept
FROM shares
GROUP BY sample, policy_id, setting
ORDER BY sample, policy_id, setting;
