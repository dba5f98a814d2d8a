-- The ranking step of every score policy, per (layer, kv_head): the cache's positions by score, highest
-- first (NULL last), ties to the later position. Continues `WITH scored AS (<cand rows + a score column>),`.
ranked AS (
    SELECT sample_key, layer, kv_head, list(position ORDER BY score DESC NULLS LAST, position DESC) AS positions
    FROM scored
    GROUP BY sample_key, layer, kv_head
)
SELECT s.run_id, s.model, s.task, s.sample_id, r.layer, r.kv_head, s.n, r.positions, NULL::INTEGER AS kept_count
FROM ranked AS r
JOIN cand_samples AS s USING (sample_key)
