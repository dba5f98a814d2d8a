-- The ranking step of a score policy shared by every layer and head (per_head = false): a position's score
-- is summed over them (fsum: compensated, so the order of the terms does not matter), then ranked as per
-- head (highest first, NULL last, ties to the later position). One row per sample, layer and kv_head NULL.
-- Continues `WITH scored AS (<cand rows + a score column>),`.
per_position AS (
    SELECT sample_key, position, fsum(score) AS score
    FROM scored
    GROUP BY sample_key, position
),
ranked AS (
    SELECT sample_key, list(position ORDER BY score DESC NULLS LAST, position DESC) AS positions
    FROM per_position
    GROUP BY sample_key
)
SELECT
    s.run_id, s.model, s.task, s.sample_id, NULL::SMALLINT AS layer, NULL::SMALLINT AS kv_head, s.n,
    r.positions, NULL::INTEGER AS kept_count
FROM ranked AS r
JOIN cand_samples AS s USING (sample_key)
