-- A position policy's ranking: one row per sample (layer and kv_head NULL: the same for every layer and
-- head), from the cache length n and the budget k alone. Reads cand_samples.
SELECT
    run_id, model, task, sample_id, NULL::SMALLINT AS layer, NULL::SMALLINT AS kv_head, n,
    positions::INTEGER[] AS positions, kept_count::INTEGER AS kept_count
FROM (
{positions_sql}
)
