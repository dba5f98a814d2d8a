-- keep_sets: one row per (run_id, task, sample_id, policy_id, setting, layer, kv_head): what a policy keeps.
-- A budget is a threshold on a stored ranking (`rankings`, shared by every budget of a policy): the forced
-- positions first (the first forced_first and last forced_last of the cache), then the ranked ones; the
-- first k are kept, k = the budget in tokens (a share of the n-position cache rounds half up, at least 1),
-- or the ranking's own kept_count for a fixed keep-set. A budget the cache cannot hold (k > n, or forced
-- positions that do not fit) has no rows, as the policy refuses it. Rankings shared by every layer and head
-- (layer NULL) are spread over the sample's grid (from layer_stats). A ranking row with positions_from reads
-- that setting's positions restricted to its own cache (p < n): a score that does not depend on the setting is
-- stored once.
--   ranked: the n cache positions in keep order; kept_positions: the k kept ones (its first k, in keep order:
--   list_sort them for ascending positions);
--   n_tokens - n positions after the cache (the question in question_agnostic) are fed later, always kept.
CREATE OR REPLACE VIEW keep_sets AS
WITH own AS (
    SELECT * EXCLUDE (positions_from) FROM rankings WHERE positions_from IS NULL
),
borrowed AS (
    SELECT r.* EXCLUDE (positions, positions_from), list_filter(b.positions, lambda p: p < r.n) AS positions
    FROM rankings AS r
    JOIN own AS b
      ON b.setting = r.positions_from AND b.run_id = r.run_id AND b.task = r.task AND b.sample_id = r.sample_id
     AND b.ranking_id = r.ranking_id AND b.layer IS NOT DISTINCT FROM r.layer
     AND b.kv_head IS NOT DISTINCT FROM r.kv_head
    WHERE r.positions_from IS NOT NULL
),
instances AS (
    SELECT
        r.run_id, r.model, r.task, r.sample_id, p.policy_id, r.setting, r.layer, r.kv_head, r.n, r.positions,
        r.kept_count, least(coalesce(p.forced_first, 0), r.n) AS first_n, coalesce(p.forced_last, 0) AS last_n,
        CASE
            WHEN p.threshold = 'all' THEN r.kept_count
            WHEN p.budget_unit = 'ratio' THEN greatest(1, floor(p.budget * r.n + 0.5))
            ELSE p.budget
        END::BIGINT AS k
    FROM (SELECT * FROM own UNION ALL BY NAME SELECT * FROM borrowed) AS r
    JOIN policies AS p USING (ranking_id)
    WHERE (p.threshold = 'all') = (r.kept_count IS NOT NULL)
),
ranked AS (
    SELECT
        * EXCLUDE (positions, first_n, last_n),
        CASE WHEN first_n + last_n = 0 THEN positions ELSE list_concat(
            range(0, first_n)::INTEGER[],
            range(greatest(n - last_n, first_n), n)::INTEGER[],
            list_filter(positions, lambda p: p >= first_n AND p < n - last_n)
        ) END AS ranked
    FROM instances
    WHERE k <= n AND least(n, first_n + last_n) <= k
),
ordered AS (  -- sliced before a shared ranking is spread over the heads: once, not once per head
    SELECT *, ranked[1:k] AS kept_positions FROM ranked
),
per_head AS (
    SELECT * FROM ordered WHERE layer IS NOT NULL
    UNION ALL BY NAME
    SELECT o.* REPLACE (g.layer AS layer, g.kv_head AS kv_head)
    FROM ordered AS o
    JOIN layer_stats AS g USING (run_id, task, sample_id)
    WHERE o.layer IS NULL
)
SELECT
    h.run_id, h.model, h.task, h.sample_id, h.policy_id, h.setting, h.layer, h.kv_head,
    h.n, s.n_tokens, h.k, h.ranked, h.kept_positions
FROM per_head AS h
JOIN samples AS s USING (run_id, task, sample_id);

-- keep: one row per (run_id, task, sample_id, policy_id, setting, layer, kv_head, position) of the prompt:
-- kept or evicted. rank = place in the policy's keep order (0 = kept first; NULL after the cache: positions
-- fed after eviction, always kept). "Which tokens does snapkv evict in this sample?" is a WHERE on this view.
CREATE OR REPLACE VIEW keep AS
WITH ranked AS (
    SELECT
        run_id, model, task, sample_id, policy_id, setting, layer, kv_head, n, k,
        unnest(ranked) AS position,
        generate_subscripts(ranked, 1) - 1 AS rank
    FROM keep_sets
)
SELECT run_id, model, task, sample_id, policy_id, setting, layer, kv_head, position, rank::INTEGER AS rank,
       rank < k AS kept
FROM ranked
UNION ALL
SELECT run_id, model, task, sample_id, policy_id, setting, layer, kv_head,
       unnest(range(n, n_tokens))::INTEGER AS position, NULL::INTEGER AS rank, TRUE AS kept
FROM keep_sets
WHERE n < n_tokens;
