-- kv_layer_vectors: one row per (sample, layer, position) for the first $max_samples samples and every
-- $layer_step-th layer (plus the last): the keys and the values of all KV heads of that layer, head
-- after head, as one vector each: what the PCA of report 4 projects.
WITH chosen AS (
    SELECT run_id, task, sample_id, sample
    FROM sample_labels
    WHERE run_id = $run_id
    ORDER BY sample
    LIMIT $max_samples
),
layers AS (
    SELECT DISTINCT layer FROM kv WHERE run_id = $run_id
),
picked AS (
    SELECT layer FROM layers
    WHERE layer % $layer_step = 0 OR layer = (SELECT max(layer) FROM layers)
)
SELECT
    c.sample,
    kv.layer,
    kv.position,
    token_label(any_value(t.token_text)) AS token,
    flatten(list(kv.key ORDER BY kv.kv_head)) AS k,
    flatten(list(kv.value ORDER BY kv.kv_head)) AS v
FROM kv
JOIN chosen AS c USING (run_id, task, sample_id)
JOIN picked USING (layer)
JOIN tokens AS t USING (run_id, task, sample_id, position)
GROUP BY c.sample, kv.layer, kv.position
ORDER BY c.sample, kv.layer, kv.position;
