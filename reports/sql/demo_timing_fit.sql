-- demo_timing_fit: one row per mode of a demo run's timing: the slope of log(median ms per token) on
-- log(length) (1 = time per token grows linearly with the length, 0 = flat), the same slope for the
-- estimated time to generate the whole sequence (2 = quadratic, 1 = linear), the lengths measured,
-- the attention implementation and the LongBench text that was fed.
WITH curve AS (
    SELECT mode, length, median(seconds) AS seconds
    FROM (
        UNPIVOT (
            SELECT length, seconds_cache AS "with cache", seconds_no_cache AS "without cache"
            FROM demo_timing WHERE run_id = $run_id
        ) ON "with cache", "without cache" INTO NAME mode VALUE seconds
    )
    GROUP BY mode, length
),
steps AS (
    SELECT *, coalesce((length - lag(length) OVER w) * (seconds + lag(seconds) OVER w) / 2, length * seconds) AS step
    FROM curve
    WINDOW w AS (PARTITION BY mode ORDER BY length)
),
total AS (
    SELECT *, sum(step) OVER (PARTITION BY mode ORDER BY length) AS seconds_total FROM steps
)
SELECT
    mode,
    regr_slope(ln(seconds), ln(length)) AS slope_per_token,
    regr_slope(ln(seconds_total), ln(length)) AS slope_total,
    min(length) AS min_length,
    max(length) AS max_length,
    1000 * arg_max(seconds, length) AS ms_at_max,
    (SELECT any_value(attn_impl) FROM demo_timing WHERE run_id = $run_id) AS attn_impl,
    (SELECT any_value(source) FROM demo_timing WHERE run_id = $run_id) AS source
FROM total
GROUP BY mode
ORDER BY mode;
