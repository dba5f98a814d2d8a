-- needle_grid: one row per (setting, kind, panel, length_requested, depth_requested) of the run's needle
-- samples: the share retrieved (exact match of the needle) with the evicted cache, and with the full cache on
-- the same samples. Panel 'full cache' (panel_order 0) is the reference grid; every other panel is one policy
-- at one budget. Kind '(all kinds)' pools the three kinds.
WITH needle AS (
    SELECT sample_id, kind, length_requested, depth_requested, depth_actual, context_tokens, needle_start
    FROM needles
    WHERE run_id = $run_id AND task = 'needle'
),
q AS (
    SELECT q.setting, q.sample_id, q.score / 100 AS hit, q.score_full / 100 AS hit_full,
           q.kept_tokens::DOUBLE / nullif(q.n_tokens, 0) AS kept_share, q.n_tokens,
           coalesce(p.name, '?') AS policy, q.budget, p.budget_unit
    FROM quality AS q
    LEFT JOIN policies AS p USING (policy_id)
    WHERE q.run_id = $run_id AND q.task = 'needle'
),
evicted AS (
    SELECT q.*, n.* EXCLUDE (sample_id),
           policy || CASE WHEN budget_unit = 'ratio' OR budget < 1 THEN ' · ' || round(100 * budget)::INTEGER || '% kept'
                          ELSE ' · ' || budget::INTEGER || ' tokens' END AS panel
    FROM q JOIN needle AS n USING (sample_id)
),
full_cache AS (
    SELECT DISTINCT setting, sample_id, hit_full AS hit, hit_full, 1.0 AS kept_share, n_tokens,
           'full cache' AS policy, NULL::DOUBLE AS budget, NULL AS budget_unit
    FROM q
),
rows AS (
    SELECT *, 1 AS panel_order FROM evicted
    UNION ALL
    SELECT f.*, n.* EXCLUDE (sample_id), 'full cache' AS panel, 0 AS panel_order
    FROM full_cache AS f JOIN needle AS n USING (sample_id)
),
kinds AS (
    SELECT * FROM rows
    UNION ALL
    SELECT * REPLACE ('(all kinds)' AS kind) FROM rows
)
SELECT
    setting,
    kind,
    panel,
    any_value(policy) AS policy,
    any_value(budget) AS budget,
    min(panel_order) AS panel_order,
    length_requested,
    depth_requested,
    count(*) AS samples,
    avg(hit) AS accuracy,
    avg(hit_full) AS accuracy_full,
    avg(depth_actual) AS depth_actual,
    avg(n_tokens) AS prompt_tokens,
    avg(context_tokens) AS context_tokens,
    avg(kept_share) AS kept_share,
    count(*) FILTER (WHERE needle_start IS NULL) AS needle_cut
FROM kinds
GROUP BY setting, kind, panel, length_requested, depth_requested
ORDER BY coalesce(list_position(['passkey', 'single', 'multi'], kind), 4), setting, panel_order, any_value(policy), any_value(budget), panel,
         length_requested, depth_requested;
