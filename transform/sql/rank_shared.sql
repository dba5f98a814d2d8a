-- The ranking step of a score policy shared by every layer and head (per_head = false): a position's score
-- is summed over them (fsum: compensated, so the order of the terms does not matter), then ranked as per
-- head (highest first, NULL last, ties to the later position). One row per sample, layer and kv_head NULL.
-- Continues `WITH scored AS (<cand rows + a score column>),`.
per_position AS (
    SELECT run_id, model, task, sample_id, position, any_value(n) AS n, fsum(score) AS score
    FROM scored
    GROUP BY run_id, model, task, sample_id, position
)
SELECT
    run_id, model, task, sample_id, NULL::SMALLINT AS layer, NULL::SMALLINT AS kv_head, any_value(n) AS n,
    list(position ORDER BY score DESC NULLS LAST, position DESC) AS positions, NULL::INTEGER AS kept_count
FROM per_position
GROUP BY run_id, model, task, sample_id
