-- eviction_token_text: one row per sample the token zoom covers (as eviction_tokens): its tokens' texts
-- (visible whitespace) as a list in position order, which the zoom zips with each policy's kept string.
WITH chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens,
           sum(s.n_tokens) OVER (ORDER BY s.sample ROWS UNBOUNDED PRECEDING) AS upto
    FROM sample_labels AS s
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
)
SELECT c.sample, list(token_label(t.token_text) ORDER BY t.position) AS tokens
FROM tokens AS t
JOIN chosen AS c USING (run_id, task, sample_id)
WHERE c.upto <= $max_zoom_tokens OR c.upto = c.n_tokens
GROUP BY c.sample
ORDER BY c.sample;
