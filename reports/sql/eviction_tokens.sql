-- eviction_tokens: one row per (sample, policy_id, setting) for the token zoom: one character per prompt
-- position, the share of the layers x KV heads that keep it, in position order: '0' none, '9' all,
-- '1'..'8' some (round(9 x share), at least 1 and at most 8).
-- Samples as eviction_pattern; the zoom covers the first of them up to $max_zoom_tokens prompt tokens in
-- all (at least one sample), so the page stays small.
WITH chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens,
           sum(s.n_tokens) OVER (ORDER BY s.sample ROWS UNBOUNDED PRECEDING) AS upto
    FROM sample_labels AS s
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
),
zoomed AS (
    SELECT * FROM chosen WHERE upto <= $max_zoom_tokens OR upto = n_tokens
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
