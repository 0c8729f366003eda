"""The mutations `benchmarks/mutation_check.py` applies: one break of product code each.

`old` must occur exactly once in `file`; `tests` are the pytest selections that claim to
cover that code. Keep each mutation small and realistic: the kind of slip a refactor makes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    breaks: str
    tests: tuple[str, ...]


SCHEDULE = ("tests/test_one_source.py", "tests/test_laws.py")
DEMO = ("tests/test_demo_settings.py",)
CALIBRATE = ("tests/test_calibrate_by_hand.py", "tests/test_calibrate.py")
CHECKED = ("tests/test_checked_forecast.py",)
SLURM = ("tests/test_slurm_executor.py",)

MUTATIONS: list[Mutation] = [
    Mutation("eval_steps_drop_last", "train/contract.py",
             "return sorted(set(steps.tolist()) | {total_steps})", "return sorted(set(steps.tolist()))",
             "the final step is no longer an eval point", ("tests/test_train.py", "tests/test_analysis_cli.py")),
    Mutation("eval_steps_linear", "train/contract.py",
             "np.geomspace(1, total_steps, num=points)", "np.linspace(1, total_steps, num=points)",
             "eval points are spaced linearly instead of log-spaced (trainer and forecast alike)",
             ("tests/test_one_source.py",)),
    # --- schedule features: fitting (the loader) vs forecasting (a planned run) ------------------
    Mutation("schedule_decay_fit_side", "analysis/rundirs.py",
             'run_schedule_features(config, frame["step"].to_numpy())',
             'run_schedule_features(config, frame["step"].to_numpy(), decay=0.99)',
             "the loader's S2 uses another momentum decay than a forecast's", SCHEDULE),
    Mutation("schedule_s1_in_steps_forecast_side", "analysis/predict.py",
             'return {"N": N, "S1": S1, "S2": S2}, steps',
             'return {"N": N, "S1": S1 / tokens_per_step, "S2": S2}, steps',
             "a forecast counts the forward area S1 in steps, the fitted table in tokens", SCHEDULE),
    Mutation("schedule_s1_in_steps", "analysis/schedule.py",
             "decay, tokens_per_step=batch)", "decay, tokens_per_step=1.0)",
             "a run's S1/S2 count steps instead of tokens (both sides)", SCHEDULE),
    Mutation("schedule_decay_constant", "analysis/schedule.py",
             "DECAY = 0.999 ", "DECAY = 0.99 ",
             "the momentum decay of S2 is not Tissue et al.'s 0.999 (both sides)", SCHEDULE),
    # --- forecast curve: every eval step, not only the last -------------------------------------
    Mutation("forecast_curve_steps", "analysis/predict.py",
             "eval_steps(cfg.steps, cfg.eval.points), dtype=int)", "eval_steps(cfg.steps, cfg.eval.points + 1), dtype=int)",
             "a forecast curve's steps are not the steps the trainer evaluates at",
             ("tests/test_one_source.py",)),
    # --- the cpu/gpu demo settings path ----------------------------------------------------------
    Mutation("demo_target_ignores_lr_rule", "testbed/preset.py",
             'keep = ("base", "base_config", "overrides", "rules", "n_params")',
             'keep = ("base", "base_config", "overrides", "n_params")',
             "the target is trained at the base lr, not the ladder's per-size LR rule", DEMO),
    Mutation("demo_ignores_fit_min_tokens", "testbed/demo.py",
             'table[(table["D"] >= preset.fit.min_tokens) | table["final"]]',
             'table[(table["D"] >= 0) | table["final"]]',
             "the demo fits the early-plateau eval points fit.min_tokens excludes", DEMO),
    Mutation("demo_ignores_fit_law", "testbed/demo.py",
             "result = fit(rows, plan.law, ", 'result = fit(rows, "kaplan", ',
             "the demo fits Kaplan's final-loss law whatever the preset names", DEMO),
    Mutation("demo_ignores_fit_select", "testbed/demo.py",
             "level=plan.level, seed=0, select=plan.select,", 'level=plan.level, seed=0, select="final",',
             "the demo fits final losses only, not the preset's row selection (every eval point)", DEMO),
    Mutation("cpu_adamw_no_bias_correction", "train/optim.py",
             "step_size = lr / (1 - beta1 ** step)", "step_size = lr",
             "the CPU AdamW drops Adam's first-moment bias correction", ("tests/test_optim.py",)),
    Mutation("branch_prefix_fitted_twice", "analysis/load.py",
             'if select == "all" and "shared" in table.columns:', 'if False:',
             "a WSD branch's copy of its parent's eval rows is fitted a second time",
             ("tests/test_sweeps_run.py::test_wsd_branch_waits_for_its_parent_and_equals_a_from_scratch_run",
              "tests/test_demo_settings.py")),
    # --- calibrated intervals --------------------------------------------------------------------
    Mutation("calibrate_s0_not_normal_consistent", "analysis/calibrate.py",
             'median_abs_deviation(r[np.isfinite(r)], scale="normal")', "median_abs_deviation(r[np.isfinite(r)])",
             "the run scatter s0 is the raw MAD, not a normal-consistent scale", CALIBRATE),
    Mutation("calibrate_k_normal_likelihood", "analysis/calibrate.py",
             "nu = 3.0", "nu = 1e6",
             "the growth rate k is fitted under a normal likelihood (one wild backtest sets it)", CALIBRATE),
    Mutation("calibrate_no_k_zero_fallback", "analysis/calibrate.py",
             "return float(np.exp(best.x)) if best.fun < nll(0.0) - 1e-9 else 0.0", "return float(np.exp(best.x))",
             "k is never 0 when the backtests are no worse than the scatter", CALIBRATE),
    Mutation("calibrate_distance_ignores_flop_convention", "analysis/calibrate.py",
             "flops_per_token(model, error.runs_flop_convention) * np.asarray(tokens, float)",
             'flops_per_token(model, "6N") * np.asarray(tokens, float)',
             "a planned run's extrapolation distance counts FLOPs by 6N, not the fitted runs' convention",
             CALIBRATE),
    # --- the checked forecast's numbers and report -----------------------------------------------
    Mutation("checked_are_relative_to_prediction", "analysis/checked.py",
             "float(np.mean([abs(p - a) / a for p, a in pairs]))", "float(np.mean([abs(p - a) / p for p, a in pairs]))",
             "the whole-curve ARE divides by the forecast, not the actual loss", CHECKED),
    Mutation("checked_are_last_point_only", "analysis/checked.py",
             "for p, a in zip(curve[\"predicted\"], curve[\"actual\"], strict=True)\n             if a is not None",
             "for p, a in zip(curve[\"predicted\"][-1:], curve[\"actual\"][-1:], strict=True)\n             if a is not None",
             "the whole-curve ARE scores the final point only", CHECKED),
    Mutation("checked_report_error_number", "analysis/checked.py",
             "f\"{100 * f['abs_rel_error']:.2f}%\"", "f\"{f['abs_rel_error']:.2f}%\"",
             "the report prints the relative error as a fraction labelled %", CHECKED),
    Mutation("checked_epochs_within_one_pass", "analysis/checked.py",
             "if seen > 1.0 and seen > 1.05 * max(epochs, default=0.0):", "if seen > 1.05 * max(epochs, default=0.0):",
             "a target that reads the corpus less than once is called a repeat of it", CHECKED),
    # --- SLURM -----------------------------------------------------------------------------------
    Mutation("slurm_partition_dropped", "sweeps/slurm.py",
             'params["slurm_partition"] = opts.partition', "pass",
             "the sweep's SLURM partition never reaches the scheduler", SLURM),
    Mutation("slurm_branch_dependency_afterok", "sweeps/slurm.py",
             'dependency=f"afterany:{parent_job.job_id}"', 'dependency=f"afterok:{parent_job.job_id}"',
             "a branch job waits for its parent to succeed (afterok), so a parent killed by its time limit "
             "after writing the checkpoint leaves the branch pending forever", SLURM),
    Mutation("slurm_resubmits_everything", "sweeps/slurm.py",
             "if run_state(sd.run_dir(r.run_id)) not in FINISHED]", "]",
             "a rerun resubmits runs that already completed", SLURM),
    Mutation("slurm_wait_failure_hidden", "sweeps/slurm.py",
             'out[r.run_id] = "failed"', "out[r.run_id] = run_state(Path(r.run_id))",
             "a job that failed (node crash, time limit) is not reported as failed", SLURM),
    # --- kaplan-schedule v2 (the law the demo's auto choice can now take) --------------------------
    Mutation("kaplan_schedule_grad_drops_alpha_s", "analysis/kernels.py",
             "grad = np.stack([P, P * aS * s1, -P * aS * s1 * lnN, P * g, -tC], axis=-1)",
             "grad = np.stack([P, P * s1, -P * aS * s1 * lnN, P * g, -tC], axis=-1)",
             "kaplan-schedule's gradient in log B loses its alpha_S factor (the fit polishes along a wrong direction)",
             ("tests/test_laws.py",)),
    Mutation("fit_file_of_old_law_version_read", "analysis/fitresult.py",
             'if str(d["law_version"]) != law.version:', 'if False:',
             "a fit file of kaplan-schedule v1 (Nc, Sc, alpha_N) is read by v2 and fails later, or not at all",
             ("tests/test_fit_truthful.py",)),
    Mutation("select_tie_rule_dropped", "analysis/select.py",
             "if np.isfinite(z) and z < TIE_Z:", "if False:",
             "auto keeps a final-loss law the backtests cannot tell from a law of whole curves",
             ("tests/test_select.py",)),
    # --- ensembles of laws ----------------------------------------------------------------------
    Mutation("ensemble_equal_weights", "analysis/select.py",
             "weights = {n: 1.0 / max(float(score[n]), 1e-12) for n in members}",
             "weights = {n: 1.0 for n in members}",
             "auto's ensemble ignores the backtests and weighs its laws equally", ("tests/test_ensemble.py",)),
    Mutation("ensemble_kernel_unweighted", "analysis/laws.py",
             "logs.append(np.log(w[i]) + lg)", "logs.append(lg - np.log(len(members)))",
             "an ensemble forecasts the plain mean of its laws, not the weighted one", ("tests/test_ensemble.py",)),
    Mutation("ensemble_spread_dropped", "analysis/calibrate.py",
             '"between_laws": np.broadcast_to(member_spread(result.law_obj, result.params, **covariates), shape)',
             '"between_laws": np.zeros(shape)',
             "an ensemble's interval ignores how far apart its laws' forecasts are", ("tests/test_ensemble.py",)),
    Mutation("interval_extrapolation_part_without_distance", "analysis/calibrate.py",
             '"extrapolation": np.broadcast_to(error.k * x, shape)', '"extrapolation": np.broadcast_to(error.k, shape)',
             "the interval's extrapolation part no longer grows with the distance beyond the ladder",
             ("tests/test_ensemble.py", *CHECKED)),
    # --- the interval's quantile ---------------------------------------------------------------
    Mutation("interval_quantile_normal", "analysis/calibrate.py",
             "q = error.quantile(level)", "q = 1.6448536269514722 if level == 0.9 else error.quantile(level)",
             "the calibrated 90% interval takes the normal quantile whatever the ladder's number of sizes",
             ("tests/test_calibrate_by_hand.py",)),
    Mutation("interval_dof_counts_rows", "analysis/calibrate.py",
             "n = int(rows[col].nunique()) if col else len(rows)", "n = len(rows)",
             "the interval's degrees of freedom count rows, not model sizes", ("tests/test_calibrate_by_hand.py",)),
    Mutation("interval_inits_ignored", "analysis/calibrate.py",
             "    if fewest_inits(rows) >= 2:\n        return None\n", "",
             "a ladder of two inits per size keeps the t quantile of a one-init ladder",
             ("tests/test_calibrate_by_hand.py",)),
    Mutation("interval_inits_counted_per_size", "analysis/calibrate.py",
             'runs.groupby(["N", "D"])["seed"].nunique().min()', 'runs.groupby("N")["seed"].nunique().min()',
             "the inits are counted per size, so runs of one size at other budgets and other seeds count as inits",
             ("tests/test_calibrate_by_hand.py",)),
    # --- intervals from a history of checked forecasts --------------------------------------------
    Mutation("history_rank_without_plus_one", "analysis/history.py",
             "rank = math.ceil((len(s) + 1) * level - 1e-9)", "rank = math.ceil(len(s) * level - 1e-9)",
             "the conformal quantile drops the (n + 1) correction, so the interval under-covers",
             ("tests/test_history.py",)),
    Mutation("history_score_ignores_ratio", "analysis/history.py",
             "return np.abs(np.log(a / p)) / np.log(ratio)", "return np.abs(np.log(a / p))",
             "past misses are not scaled by how far they extrapolated", ("tests/test_history.py",)),
    Mutation("history_keeps_untrained_records", "analysis/history.py",
             'r.get("actual") is not None and ', "",
             "a forecast whose target has not trained counts as history", ("tests/test_history.py",)),
    Mutation("demo_history_includes_its_own_forecast", "testbed/demo.py",
             "if Path(h).resolve() != (out / FORECAST_FILE).resolve()]", "]",
             "a demo's own checked forecast calibrates its own interval", ("tests/test_demo.py",)),
    Mutation("shipped_history_keeps_own_seed", "testbed/preset.py",
             'return path, [r for r in d["records"] if r.get("seed") != seed]', 'return path, list(d["records"])',
             "a preset's shipped history keeps the running seed's own forecasts", ("tests/test_demo.py",)),
    Mutation("shipped_history_ignores_data", "testbed/preset.py",
             'for part in ("data", "run"):\n        ladder.get("base", {}).get(part, {}).pop("seed", None)',
             'ladder.get("base", {}).pop("data", None)\n    ladder.get("base", {}).get("run", {}).pop("seed", None)',
             "the recipe key leaves out the data, so a history shipped for the synthetic language is used on a "
             "user's corpus", ("tests/test_demo.py",)),
    # --- resume on the data the checkpoint saw --------------------------------------------------
    Mutation("resume_ignores_data_fingerprint", "train/book.py",
             "if saved and self.data_id and saved != self.data_id:", "if False:",
             "a run resumes on a corpus or token cache that changed since its checkpoint",
             ("tests/test_resume.py",)),
    # --- the command line -----------------------------------------------------------------------
    Mutation("cli_unknown_command_exit_0", "testbed/cli.py",
             "{usage()}\", file=sys.stderr)\n        return 2", "{usage()}\", file=sys.stderr)\n        return 0",
             "`testbed nosuch` exits 0", ("tests/test_testbed_cli.py",)),
    Mutation("cli_module_exit_code_lost", "testbed/__main__.py",
             "raise SystemExit(main())", "main()",
             "`python -m testbed` always exits 0", ("tests/test_testbed_cli.py",)),
    # --- tests that could not fail, rewritten --------------------------------------------------
    Mutation("local_cpu_worker_hides_gpus", "sweeps/local.py",
             "        env[\"CUDA_VISIBLE_DEVICES\"] = ids[slot % n_gpus]\n    return env",
             "        env[\"CUDA_VISIBLE_DEVICES\"] = ids[slot % n_gpus]\n    else:\n"
             "        env.pop(\"CUDA_VISIBLE_DEVICES\", None)\n    return env",
             "a CPU-only worker drops the user's CUDA_VISIBLE_DEVICES", ("tests/test_sweeps_run.py::test_workers_split_cpu_threads_and_take_gpus_round_robin",)),
    Mutation("fit_table_estimate_is_interval_end", "analysis/console.py",
             'table.add_row(name, f"{value:.6g}",', 'table.add_row(name, f"{iv[0] if iv else value:.6g}",',
             "`testbed fit` prints the interval's lower end as the estimate",
             ("tests/test_analysis_cli.py::test_fit_writes_json_and_prints_the_parameter_table",)),
    Mutation("run_id_hash_shortened", "train/config.py",
             "config_hash(self)[:8]", "config_hash(self)[:7]",
             "run ids change, so relaunched sweeps no longer find their finished runs",
             ("tests/test_config.py", "tests/test_sweeps_spec.py")),
    Mutation("plan_tokens_per_param_total_n", "sweeps/plan.py",
             '"tokens_per_param": r.tokens / r.n_params,', '"tokens_per_param": r.tokens / r.params["total"],',
             "the plan's tokens per parameter ignores the spec's N convention", ("tests/test_presets.py",)),
]
