-- token_summary: one row per (run_id, task, sample_id, position).
-- Each token's magnitudes averaged over every layer and KV head, beside its
-- text, category and segment: the table the token-level reports and ad-hoc
-- "which tokens matter" questions start from.
CREATE OR REPLACE VIEW token_summary AS
WITH per_token AS (
    SELECT
        run_id, model, task, sample_id, position,
        avg(key_norm)::FLOAT       AS key_norm,
        avg(value_norm)::FLOAT     AS value_norm,
        avg(key_absmean)::FLOAT    AS key_absmean,
        avg(value_absmean)::FLOAT  AS value_absmean,
        max(key_absmax)::FLOAT     AS key_absmax,
        max(value_absmax)::FLOAT   AS value_absmax,
        avg(attn_received)::FLOAT  AS attn_received
    FROM token_stats
    GROUP BY ALL
)
SELECT
    p.*,
    t.token_id,
    t.token_text,
    t.category::VARCHAR AS category,
    t.segment::VARCHAR  AS segment
FROM per_token AS p
JOIN tokens AS t USING (run_id, model, task, sample_id, position);
