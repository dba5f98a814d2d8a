-- eviction_pattern: one row per (sample, policy_id, setting, layer) for the first $max_samples samples
-- of the run that have keep-sets (rankings): the share of cache entries kept (over the KV heads and positions of
-- each of `buckets` position buckets, least($buckets, n_tokens) per sample) as a list of whole
-- percents, bucket after bucket. Position-based policies give 0/100 stripes, per-head ones shades.
WITH chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens, least($buckets, s.n_tokens) AS buckets
    FROM sample_labels AS s
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
),
cells AS (
    SELECT
        c.sample, c.n_tokens, c.buckets, k.policy_id, k.setting, k.layer,
        pos_bucket(k.position, c.n_tokens, c.buckets) AS bucket,
        round(100 * avg(k.kept::INTEGER))::INTEGER AS kept_pct
    FROM keep AS k
    JOIN chosen AS c USING (run_id, task, sample_id)
    GROUP BY ALL
)
SELECT
    sample, policy_id, setting, layer, n_tokens, buckets,
    list(kept_pct ORDER BY bucket) AS kept_pct
FROM cells
GROUP BY ALL
ORDER BY sample, policy_id, setting, layer;
