-- demo_timing_curve: one row per (mode, length) of a demo run's timing: the median, fastest and slowest
-- milliseconds of one generated token after `length` tokens, with the cache (the new token against the
-- cached keys and values) or without it (the whole sequence again), and the estimated seconds to
-- generate a whole sequence of `length` tokens one by one: the per-token curve summed by the trapezoid
-- rule between measured lengths (constant below the first).
WITH timings AS (
    UNPIVOT (
        SELECT length, seconds_cache AS "with cache", seconds_no_cache AS "without cache"
        FROM demo_timing
        WHERE run_id = $run_id
    ) ON "with cache", "without cache" INTO NAME mode VALUE seconds
),
per_length AS (
    SELECT mode, length, 1000 * median(seconds) AS ms, 1000 * min(seconds) AS ms_min,
           1000 * max(seconds) AS ms_max, count(*) AS repeats
    FROM timings
    GROUP BY mode, length
),
steps AS (
    SELECT *,
           coalesce((length - lag(length) OVER w) * (ms + lag(ms) OVER w) / 2, length * ms) AS step_ms
    FROM per_length
    WINDOW w AS (PARTITION BY mode ORDER BY length)
)
SELECT mode, length, ms, ms_min, ms_max, repeats,
       sum(step_ms) OVER (PARTITION BY mode ORDER BY length) / 1000 AS seconds_total
FROM steps
ORDER BY mode, length;
