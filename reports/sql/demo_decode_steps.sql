-- demo_decode_steps: one row per (step, mode) of a demo run's greedy decoding: milliseconds of one
-- forward with the cache (the new token only) or without it (the whole sequence again), the sequence
-- length, the token chosen, whether both ways chose the same token and their max |logit difference|.
SELECT
    step,
    length,
    mode,
    1000 * seconds AS ms,
    token_label(token_text) AS token,
    token_id = token_id_no_cache AS same_token,
    max_abs_diff
FROM (
    UNPIVOT (
        SELECT step, length, token_text, token_id, token_id_no_cache, max_abs_diff,
               seconds_cache AS "with cache", seconds_no_cache AS "without cache"
        FROM demo_decode
        WHERE run_id = $run_id
    ) ON "with cache", "without cache" INTO NAME mode VALUE seconds
)
ORDER BY step, mode;
