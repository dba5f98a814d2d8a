-- demo_cache_attention_summary: one row for a demo run: how many attention weights were computed both
-- ways (with the cache, one query at a time; without it, the whole prompt), the largest absolute
-- difference, the stated $tolerance and whether every weight is within it; also the weights of the
-- cached queries the recomputation lacks or the other way round (0 when both cover the same entries).
WITH both_ways AS (
    SELECT c.weight AS with_cache, a.weight AS without_cache
    FROM demo_cache_attention AS c
    FULL JOIN (
        SELECT * FROM demo_attention
        WHERE run_id = $run_id
          AND query_pos >= (SELECT min(query_pos) FROM demo_cache_attention WHERE run_id = $run_id)
    ) AS a USING (run_id, layer, q_head, query_pos, key_pos)
    WHERE coalesce(c.run_id, a.run_id) = $run_id
)
SELECT
    count(*) FILTER (WHERE with_cache IS NOT NULL AND without_cache IS NOT NULL) AS weights,
    count(*) FILTER (WHERE with_cache IS NULL OR without_cache IS NULL) AS unmatched,
    max(abs(with_cache::DOUBLE - without_cache::DOUBLE)) AS max_abs_diff,
    $tolerance::DOUBLE AS tolerance,
    coalesce(max(abs(with_cache::DOUBLE - without_cache::DOUBLE)) <= $tolerance, false)
        AND count(*) FILTER (WHERE with_cache IS NULL OR without_cache IS NULL) = 0 AS within_tolerance,
    (SELECT count(DISTINCT query_pos) FROM demo_cache_attention WHERE run_id = $run_id) AS queries,
    (SELECT count(DISTINCT layer) FROM demo_cache_attention WHERE run_id = $run_id) AS layers,
    (SELECT count(DISTINCT q_head) FROM demo_cache_attention WHERE run_id = $run_id) AS heads
FROM both_ways;
