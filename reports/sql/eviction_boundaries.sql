-- eviction_boundaries: one row per (sample, policy_id, setting) of the samples eviction_pattern draws:
-- the policy's label, the share of the cache kept, and the boundaries of what every layer and KV head
-- keeps: sink_end = first position not kept everywhere (the sink boundary), recent_start = one past the
-- last such position (the recent boundary). A keep-all policy has sink_end = n_tokens.
WITH chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens
    FROM sample_labels AS s
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
),
per_position AS (
    SELECT c.sample, c.n_tokens, k.policy_id, k.setting, k.position,
           bool_and(k.kept) AS kept_everywhere, avg(k.kept::INTEGER) AS kept_share
    FROM keep AS k
    JOIN chosen AS c USING (run_id, task, sample_id)
    GROUP BY ALL
)
SELECT
    pp.sample,
    pp.policy_id,
    pp.setting,
    coalesce(p.name, '?') || coalesce(' ' || replace(replace(replace(p.params, '"', ''), '{', ''), '}', ''), '')
        || ' [' || pp.policy_id || ']' AS policy,
    any_value(pp.n_tokens) AS n_tokens,
    avg(pp.kept_share) AS kept_share,
    coalesce(min(pp.position) FILTER (WHERE NOT pp.kept_everywhere), any_value(pp.n_tokens)) AS sink_end,
    coalesce(max(pp.position) FILTER (WHERE NOT pp.kept_everywhere) + 1, 0) AS recent_start
FROM per_position AS pp
LEFT JOIN policies AS p USING (policy_id)
GROUP BY pp.sample, pp.policy_id, pp.setting, p.name, p.params
ORDER BY pp.sample, policy, pp.setting;
