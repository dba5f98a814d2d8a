-- The ranking step of every score policy, per (layer, kv_head): the cache's positions by score, highest
-- first (NULL last), ties to the later position. Continues `WITH scored AS (<cand rows + a score column>),`.
ranked AS (
    SELECT
        run_id, model, task, sample_id, layer, kv_head, any_value(n) AS n,
        list(position ORDER BY score DESC NULLS LAST, position DESC) AS positions
    FROM scored
    GROUP BY run_id, model, task, sample_id, layer, kv_head
)
SELECT *, NULL::INTEGER AS kept_count FROM ranked
