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
forced AS (  -- the forced positions first, once per ranking row and forcing (not once per budget)
    SELECT
        r.* EXCLUDE (positions), f.forced_first, f.forced_last,
        least(f.forced_first, r.n) AS first_n, f.forced_last AS last_n,
        CASE WHEN least(f.forced_first, r.n) + f.forced_last = 0 THEN r.positions ELSE list_concat(
            range(0, least(f.forced_first, r.n))::INTEGER[],
            range(greatest(r.n - f.forced_last, least(f.forced_first, r.n)), r.n)::INTEGER[],
            list_filter(r.positions, lambda p: p >= least(f.forced_first, r.n) AND p < r.n - f.forced_last)
        ) END AS ranked
    FROM (SELECT * FROM own UNION ALL BY NAME SELECT * FROM borrowed) AS r
    JOIN (
        SELECT DISTINCT ranking_id, coalesce(forced_first, 0) AS forced_first, coalesce(forced_last, 0) AS forced_last
        FROM policies
    ) AS f USING (ranking_id)
),
ranked AS (  -- every policy instance (budget) of the ranking: k, and whether the budget fits the cache
    SELECT
        r.run_id, r.model, r.task, r.sample_id, p.policy_id, r.setting, r.layer, r.kv_head, r.n, r.ranked,
        CASE
            WHEN p.threshold = 'all' THEN r.kept_count
            WHEN p.budget_unit = 'ratio' THEN greatest(1, floor(p.budget * r.n + 0.5))
            ELSE p.budget
        END::BIGINT AS k,
        r.first_n + r.last_n AS forced_n
    FROM forced AS r
    JOIN policies AS p
      ON p.ranking_id = r.ranking_id AND coalesce(p.forced_first, 0) = r.forced_first
     AND coalesce(p.forced_last, 0) = r.forced_last
    WHERE (p.threshold = 'all') = (r.kept_count IS NOT NULL)
),
ordered AS (  -- sliced before a shared ranking is spread over the heads: once, not once per head
    SELECT * EXCLUDE (forced_n), ranked[1:k] AS kept_positions FROM ranked
    WHERE k <= n AND least(n, forced_n) <= k
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
