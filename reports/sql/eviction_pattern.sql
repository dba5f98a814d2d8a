-- eviction_pattern: one row per (sample, policy_id, setting) for the first $max_samples samples of the run
-- that have keep-sets (rankings): `kept`, one character per (layer, position bucket), layer after layer, the
-- share of the bucket's cache entries (KV heads x positions) kept: '0' none, '9' all, '1'..'8' some
-- (round(9 x share), at least 1 and at most 8). Position-based policies give 0/9 stripes, per-head ones
-- shades. Buckets per sample: least($buckets, n_tokens, and what keeps the page's characters under
-- $max_cells): a sweep of many policies x budgets gets coarser buckets, never a bigger page.
WITH chosen AS (
    SELECT s.run_id, s.task, s.sample_id, s.sample, s.n_tokens
    FROM sample_labels AS s
    WHERE s.run_id = $run_id
      AND EXISTS (SELECT 1 FROM rankings AS k WHERE k.run_id = s.run_id AND k.task = s.task AND k.sample_id = s.sample_id)
    ORDER BY s.sample
    LIMIT $max_samples
),
panels AS (  -- (sample, policy, setting, layer) rows of buckets the page will carry
    SELECT count(*) AS n_rows
    FROM (
        SELECT DISTINCT ks.task, ks.sample_id, ks.policy_id, ks.setting, ks.layer
        FROM keep_sets AS ks JOIN chosen AS c USING (run_id, task, sample_id)
    )
),
sized AS (
    SELECT c.*, least($buckets, c.n_tokens, greatest(16, $max_cells // greatest(p.n_rows, 1)))::INTEGER AS buckets
    FROM chosen AS c, panels AS p
),
cells AS (
    SELECT
        c.sample, c.n_tokens, c.buckets, k.policy_id, k.setting, k.layer,
        pos_bucket(k.position, c.n_tokens, c.buckets) AS bucket,
        avg(k.kept::INTEGER) AS share
    FROM keep AS k
    JOIN sized AS c USING (run_id, task, sample_id)
    GROUP BY ALL
)
SELECT
    sample, policy_id, setting, n_tokens, buckets,
    count(DISTINCT layer) AS layers,
    string_agg(
        CASE WHEN share = 0 THEN '0' WHEN share = 1 THEN '9'
             ELSE chr(48 + least(8, greatest(1, round(9 * share)))::INTEGER) END,
        '' ORDER BY layer, bucket
    ) AS kept
FROM cells
GROUP BY sample, policy_id, setting, n_tokens, buckets
ORDER BY sample, policy_id, setting;
