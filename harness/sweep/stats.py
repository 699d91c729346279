"""Across seeds: accuracy per config and backend, paired differences with t intervals, and the sweep's verdict.

One seed is one draw (LeNet5 at a constant rate agreed on 99.10-99.53% of predictions over seeds 0-9), so a
sweep judges a pair of backends over its seeds. Seed ``s`` gives both backends the same initial weights, data
order and (synthetic) data, so the two accuracies of a seed are *paired*: the verdict uses the per-seed
difference d_s = accuracy_a(s) - accuracy_b(s), its mean and a two-sided Student t interval over the seeds
(n - 1 degrees of freedom), which removes the seed-to-seed spread both backends share.

A pair PASSES when, over its seeds, (1) every same-weights check of every seed passed (those are exact,
deterministic checks: one failure is a bug, not noise), (2) the whole 95% interval of the accuracy
difference lies within the trained band (``tolerances.toml [trained] accuracy_band``, an equivalence test in
the spirit of TOST), and (3) in every seed the backends' top-1 agreement reached the floor that seed's control
run set (agreement of the first backend with itself from weights one float32 step away: what rounding alone
does). It FAILS when a same-weights check failed, when the interval lies wholly outside the band, or when the
agreement margin's interval lies wholly below the floor. Anything between is INCONCLUSIVE: more seeds decide.
Fewer than two seeds, or models that have not learned, are INCONCLUSIVE too; a run that failed is an ERROR.

How this relates to MLPerf's reference convergence check, honestly: MLPerf Training's RCP checker takes the
number of epochs (or samples) a reference implementation needs to reach a quality target, over many seeds, and
flags a submission whose olympic mean over its own runs is faster than that distribution allows (a one-sided
two-sample t test at alpha 0.05, unpaired; mlcommons/logging's rcp_checker). It anchors the idea used here,
that agreement is judged against a distribution over seeds and never against one run; it differs in what is
measured (the harness compares the final accuracy after a fixed budget, not epochs to a target), in the test
(two-sided and paired by seed, not one-sided and unpaired: MLPerf guards against converging suspiciously fast,
a port can be wrong either way), and in the control run, which MLPerf has no counterpart of. This is not an
implementation of MLPerf's check.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

CONFIDENCE = 0.95

PASS, FAIL, INCONCLUSIVE, ERROR = "PASS", "FAIL", "INCONCLUSIVE", "ERROR"
# How a verdict reads in the tidy tables' status/passed columns, as agreement.csv has them.
STATUS = {PASS: ("ok", True), FAIL: ("ok", False), INCONCLUSIVE: ("inconclusive", None), ERROR: ("error", False)}


def t_cdf(t: float, df: int) -> float:
    """Student's t cumulative distribution at ``t`` with an integer ``df`` >= 1, in closed form.

    Abramowitz & Stegun 26.7.3 and 26.7.4: with theta = atan(|t| / sqrt(df)), P(|T| <= |t|) is a finite sum
    of powers of cos(theta); exact to rounding, no series truncated, no scipy.
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df}")
    df = int(df)
    theta = math.atan2(abs(t), math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    term = total = 1.0
    if df % 2:
        for j in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * j) / (2 * j + 1)
            total += term
        inside = 2 / math.pi * (theta + (sin * math.cos(theta) * total if df > 1 else 0.0))
    else:
        for j in range(1, (df - 2) // 2 + 1):
            term *= cos2 * (2 * j - 1) / (2 * j)
            total += term
        inside = sin * total
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (t_quantile(0.975, 1) = 12.7062...), by bisection
    of ``t_cdf`` to the last bit."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def mean_interval(values, confidence: float = CONFIDENCE) -> dict:
    """Mean, sample standard deviation and the two-sided t interval of the mean of ``values`` (NaN dropped).

    Returns:
        ``n``, ``mean``, ``std`` (ddof 1), ``low``, ``high``; std and the bounds are NaN under two values.
    """
    data = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=np.float64)
    n = len(data)
    mean = float(data.mean()) if n else float("nan")
    std = float(data.std(ddof=1)) if n > 1 else float("nan")
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


# The columns the summaries read: present (empty) even when every run failed and no row carries them.
RUN_FIELDS = ("variant", "config", "model", "dataset", "seed", "backend", "device", "role", "status", "test_accuracy",
              "train_seconds", "images_per_s")
SEED_FIELDS = ("variant", "config", "model", "dataset", "seed", "backend_a", "backend_b", "status", "accuracy_a",
               "accuracy_b", "top1_agree", "min_top1_agree", "control_top1_agree", "checks_failed", "failed_checks",
               "reason", "error")


def _with(frame: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    return frame.reindex(columns=list(dict.fromkeys([*frame.columns, *names])))


def _first(frame: pd.DataFrame, column: str):
    return frame[column].iloc[0] if column in frame and len(frame) else None


def backend_table(runs: pd.DataFrame, axis_names: tuple[str, ...] = ()) -> pd.DataFrame:
    """sweep.csv: per config, backend and role (run or control), test accuracy across the seeds that completed.

    Args:
        runs: sweep_runs rows (variant, config, model, dataset, axis columns, seed, backend, device, role,
            status, test_accuracy, train_seconds, images_per_s).
        axis_names: the variant axes, copied as columns.
    """
    rows = []
    if runs.empty:
        return pd.DataFrame(rows)
    for (variant, backend, role), frame in _with(runs, RUN_FIELDS).groupby(["variant", "backend", "role"], sort=False):
        done = frame[frame["status"] == "completed"]
        accuracy = pd.to_numeric(done["test_accuracy"], errors="coerce")
        stats = mean_interval(accuracy)
        rows.append({"variant": variant, "config": _first(frame, "config"), "model": _first(frame, "model"),
                     "dataset": _first(frame, "dataset"), **{name: _first(frame, name) for name in axis_names},
                     "backend": backend, "device": _first(frame, "device"), "role": role, "seeds": stats["n"],
                     "seed_list": " ".join(str(int(s)) for s in done["seed"]), "failed": len(frame) - len(done),
                     "accuracy_mean": stats["mean"], "accuracy_std": stats["std"],
                     "accuracy_min": float(accuracy.min()) if len(accuracy) else float("nan"),
                     "accuracy_max": float(accuracy.max()) if len(accuracy) else float("nan"),
                     "accuracy_ci_low": stats["low"], "accuracy_ci_high": stats["high"],
                     "train_seconds_mean": pd.to_numeric(done["train_seconds"], errors="coerce").mean(),
                     "images_per_s_mean": pd.to_numeric(done["images_per_s"], errors="coerce").mean()})
    return pd.DataFrame(rows)


def _listing(frame: pd.DataFrame, column: str) -> str:
    return "; ".join(f"seed {int(seed)}: {text}" for seed, text in zip(frame["seed"], frame[column])
                     if isinstance(text, str) and text)


def judge(seeds: pd.DataFrame, band: float, confidence: float = CONFIDENCE) -> dict:
    """The verdict of one pair of backends of one config over its seeds (see the module's docstring).

    Args:
        seeds: that pair's sweep_seeds rows: seed, status (ok, inconclusive, error), accuracy_a, accuracy_b,
            top1_agree, min_top1_agree, control_top1_agree, failed_checks, reason, error.
        band: the largest accuracy difference (a fraction) that still counts as equal.
        confidence: of the intervals.

    Returns:
        The sweep_pairs numbers and ``verdict``, ``status``, ``passed``, ``reason``.
    """
    seeds = _with(seeds, SEED_FIELDS)
    errors = seeds[seeds["status"] == "error"]
    usable = seeds[seeds["status"] != "error"]
    delta = mean_interval(pd.to_numeric(usable["accuracy_a"], errors="coerce")
                          - pd.to_numeric(usable["accuracy_b"], errors="coerce"), confidence)
    agree = pd.to_numeric(usable["top1_agree"], errors="coerce")
    floor = pd.to_numeric(usable["min_top1_agree"], errors="coerce")
    margin = mean_interval(agree - floor, confidence)
    numbers = {"seeds": len(usable), "accuracy_a_mean": pd.to_numeric(usable["accuracy_a"], errors="coerce").mean(),
               "accuracy_b_mean": pd.to_numeric(usable["accuracy_b"], errors="coerce").mean(),
               "accuracy_delta_mean": delta["mean"], "accuracy_delta_std": delta["std"],
               "delta_ci_low": delta["low"], "delta_ci_high": delta["high"], "confidence": confidence,
               "accuracy_band": band, "top1_agree_mean": agree.mean(), "top1_agree_min": agree.min(),
               "control_top1_agree_mean": pd.to_numeric(usable["control_top1_agree"], errors="coerce").mean(),
               "min_top1_agree_mean": floor.mean(), "seeds_below_floor": int((agree < floor).sum()),
               "checks_failed": int(pd.to_numeric(usable["checks_failed"], errors="coerce").fillna(0).sum())}
    failed_checks = _listing(usable, "failed_checks")
    width = f"{confidence:.0%} CI [{100 * delta['low']:+.2f}, {100 * delta['high']:+.2f}] points"
    said = f"accuracy difference {100 * delta['mean']:+.2f} points ({width}) over {delta['n']} seeds"
    if len(errors):
        verdict, reason = ERROR, f"{len(errors)} seed(s) lack a run: {_listing(errors, 'error')}"
    elif failed_checks:
        verdict, reason = FAIL, f"same-weights checks failed: {failed_checks}"
    elif delta["n"] < 2:
        verdict, reason = INCONCLUSIVE, (f"{delta['n']} seed: a confidence interval needs at least 2; list more in "
                                         "axes.seed (one seed's agreement is one draw)")
    elif (unlearned := usable[usable["status"] == "inconclusive"]).shape[0]:
        accuracies = "; ".join(f"seed {int(r.seed)}: {r.backend_a} {r.accuracy_a:.2%}, {r.backend_b} {r.accuracy_b:.2%}"
                               for r in unlearned.itertuples())
        verdict, reason = INCONCLUSIVE, (f"the models have not learned in {len(unlearned)} of {len(usable)} seeds "
                                         f"({accuracies}), so their agreement says little; train longer or on real "
                                         "data (each seed's summary.md says why)")
    elif delta["low"] > band or delta["high"] < -band:
        verdict, reason = FAIL, f"{said}: wholly outside ±{100 * band:.1f} points"
    elif margin["high"] < 0:
        verdict, reason = FAIL, (f"top-1 agreement {agree.mean():.2%} is below the control's floor "
                                 f"{floor.mean():.2%} in every reading of its {confidence:.0%} interval")
    elif delta["low"] < -band or delta["high"] > band:
        verdict, reason = INCONCLUSIVE, f"{said} reaches past ±{100 * band:.1f} points: more seeds would decide"
    elif numbers["seeds_below_floor"]:
        verdict, reason = INCONCLUSIVE, (f"top-1 agreement fell below the control's floor in "
                                         f"{numbers['seeds_below_floor']} of {len(usable)} seeds: more seeds decide")
    else:
        verdict, reason = PASS, (f"{said} within ±{100 * band:.1f} points; top-1 agreement {agree.mean():.2%} "
                                 f"(min {agree.min():.2%}) reached the control's floor in every seed; every "
                                 "same-weights check passed")
    status, passed = STATUS[verdict]
    return {**numbers, "verdict": verdict, "status": status, "passed": passed, "reason": reason}


def pair_table(seeds: pd.DataFrame, band: float, axis_names: tuple[str, ...] = (),
               confidence: float = CONFIDENCE) -> pd.DataFrame:
    """sweep_pairs.csv: one row per config and pair of backends, judged over its seeds (``judge``)."""
    rows = []
    if seeds.empty:
        return pd.DataFrame(rows)
    for (variant, a, b), frame in seeds.groupby(["variant", "backend_a", "backend_b"], sort=False):
        rows.append({"variant": variant, "config": _first(frame, "config"), "model": _first(frame, "model"),
                     "dataset": _first(frame, "dataset"), **{name: _first(frame, name) for name in axis_names},
                     "backend_a": a, "backend_b": b, **judge(frame, band, confidence)})
    return pd.DataFrame(rows)


def overall(pairs: pd.DataFrame) -> str:
    """The sweep's verdict: ERROR if a pair errored, else FAIL if one failed, else INCONCLUSIVE if one could not
    decide or there is no pair (one backend), else PASS."""
    verdicts = set(pairs["verdict"]) if not pairs.empty else set()
    for verdict in (ERROR, FAIL, INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return PASS if verdicts else INCONCLUSIVE
