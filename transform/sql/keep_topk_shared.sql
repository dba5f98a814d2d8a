-- The selection step of every score policy, one keep-set for all layers and heads: a position's score
-- is summed over them (fsum: compensated, so the order of the terms does not matter), then the forced
-- positions (first $sink, last $recent), the highest score (NULL last), ties to the later position.
-- Continues `WITH scored AS (<cand rows plus a score column>),`.
per_position AS (
    SELECT run_id, task, sample_id, position, any_value(n) AS n, any_value(k) AS k, fsum(score) AS score
    FROM scored
    GROUP BY run_id, task, sample_id, position
),
ranked AS (
    SELECT
        run_id, task, sample_id, position, k,
        row_number() OVER (
            PARTITION BY run_id, task, sample_id
            ORDER BY (position < $sink OR position >= n - $recent) DESC, score DESC NULLS LAST, position DESC
        ) AS rank
    FROM per_position
)
SELECT s.run_id, s.model, s.task, s.sample_id, s.layer, s.kv_head, s.position, r.rank <= r.k AS kept
FROM scored AS s
JOIN ranked AS r USING (run_id, task, sample_id, position)
