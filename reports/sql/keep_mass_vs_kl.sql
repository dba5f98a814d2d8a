-- keep_mass_vs_kl: one row per (task, sample_id, policy_id, setting) of the run that has both a keep-set
-- and a quality row: the model-free proxies of keep_summary (share of the observed attention mass and of the
-- key-norm mass the kept positions hold, averaged over layers and KV heads) beside the measured KLs of
-- quality_samples (NULL with a reason where undefined).
SELECT
    q.task, q.category, q.sample_id, q.setting, q.policy_id, q.label, q.budget, q.kept_share,
    k.attn_mass_kept, k.key_norm_mass_kept, q.kl_continuation, q.continuation_null_reason, q.kl,
    q.answer_null_reason
FROM quality_samples AS q
JOIN keep_summary AS k USING (run_id, task, sample_id, policy_id, setting)
WHERE q.run_id = $run_id
ORDER BY q.label, q.budget, q.task, q.sample_id, q.setting;
