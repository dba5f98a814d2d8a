-- The ranking step of every score policy, per (layer, kv_head): the cache's positions by score, highest
-- first (NULL last), ties to the later position. Continues `WITH scored AS (<cand rows + a score column>),`.
ranked AS (
    SELECT
        any_value(run_id) AS run_id, any_value(model) AS model, any_value(task) AS task,
        any_value(sample_id) AS sample_id, layer, kv_head, any_value(n) AS n,
        list(position ORDER BY score DESC NULLS LAST, position DESC) AS positions
    FROM scored
    GROUP BY sample_key, layer, kv_head
)
SELECT *, NULL::INTEGER AS kept_count FROM ranked
