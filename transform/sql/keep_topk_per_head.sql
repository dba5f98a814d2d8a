-- The selection step of every score policy, per (layer, kv_head): the forced positions (first $sink
-- and last $recent of the cache), then the highest score (NULL last), ties to the later position.
-- Continues `WITH scored AS (<cand rows plus a score column>),`.
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY run_id, task, sample_id, layer, kv_head
            ORDER BY (position < $sink OR position >= n - $recent) DESC, score DESC NULLS LAST, position DESC
        ) AS rank
    FROM scored
)
SELECT run_id, model, task, sample_id, layer, kv_head, position, rank <= k AS kept
FROM ranked
