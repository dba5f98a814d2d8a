-- Positions after the evicted cache, recorded as kept: in the question-agnostic setting the question is
-- fed after eviction at the end of the context, so it is in the final cache; none in question_aware.
SELECT t.run_id, t.model, t.task, t.sample_id, t.layer, t.kv_head, t.position, TRUE AS kept
FROM src_stats AS t
JOIN src_samples AS s USING (run_id, task, sample_id)
WHERE $setting = 'question_agnostic' AND t.position >= s.context_end
