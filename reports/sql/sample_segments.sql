-- sample_segments: one row per (sample, segment) of the run: the [start, end) token range of the
-- instruction, context and question, to shade behind position charts.
SELECT sample, segment, start_pos AS position, end_pos AS end_position
FROM (
    SELECT sample, 'context' AS segment, context_start AS start_pos, context_end AS end_pos FROM sample_labels
    WHERE run_id = $run_id
    UNION ALL
    SELECT sample, 'question', question_start, question_end FROM sample_labels
    WHERE run_id = $run_id
)
WHERE end_pos > start_pos
ORDER BY sample, position;
