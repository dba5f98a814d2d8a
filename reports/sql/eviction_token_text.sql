-- eviction_token_text: one row per sample the token zoom covers (as eviction_tokens): its tokens' texts
-- (visible whitespace) as a list in position order, which the zoom zips with each policy's kept string.
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
)
SELECT c.sample, list(token_label(t.token_text) ORDER BY t.position) AS tokens
FROM tokens AS t
JOIN chosen AS c USING (run_id, task, sample_id)
WHERE c.upto <= $max_zoom_cells OR c.upto = c.cells
GROUP BY c.sample
ORDER BY c.sample;
