-- demo_decode_summary: one row for a demo run's decoding comparison: steps, how many greedy tokens
-- agree, the largest logit difference, the generated text, and total time with and without the cache
-- (step 0, the prefill, excluded from the per-token means).
SELECT
    count(*) AS steps,
    count(*) FILTER (WHERE token_id = token_id_no_cache) AS same_tokens,
    max(max_abs_diff) AS max_abs_diff,
    string_agg(token_text, '' ORDER BY step) AS text,
    1000 * avg(seconds_cache) FILTER (WHERE step > 0) AS ms_per_token_cache,
    1000 * avg(seconds_no_cache) FILTER (WHERE step > 0) AS ms_per_token_no_cache,
    min(length) AS prompt_tokens
FROM demo_decode
WHERE run_id = $run_id;
