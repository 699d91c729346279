"""``harness bench`` on tiny settings, its bad flags, and the inference speeds a run records for the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.bench.measure import PHASES, SETTINGS, Subject, default_counts, load_bench_data, make_plan, measure
from harness.bench.report import add_ratios
from harness.cli.main import main
from harness.compare.session import speed_table
from harness.config import build_config
from harness.errors import HarnessError
from harness.training.schedule import learning_rates

pytest.importorskip("torch")

TINY = ["--backends", "pytorch", "--models", "lenet5", "--batch-sizes", "8", "--steps", "3", "--repeats", "2",
        "--warmup", "1", "--dataset", "synthetic"]


def test_bench_writes_every_phase_with_positive_speeds_and_ratios(tmp_path, capsys):
    assert main(["bench", *TINY, "--reports", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "harness/bare" in out and "bench.csv" in out
    frame = pd.read_csv(tmp_path / "bench.csv")
    assert list(frame.phase) == list(PHASES)
    assert (frame.backend == "pytorch").all() and (frame.dataset == "synthetic").all()
    assert (frame.batch_size == 8).all() and (frame.steps == 3).all() and (frame.repeats == 2).all()
    assert (frame.images_per_s > 0).all()
    assert (frame.images_per_s_min <= frame.images_per_s).all() and (frame.images_per_s <= frame.images_per_s_max).all()
    assert np.allclose(frame.ms_per_step, 1000 * 8 / frame.images_per_s)
    train = frame.set_index("phase").loc["train"]
    assert 0 < train.harness_to_bare_min <= train.harness_to_bare <= train.harness_to_bare_max
    assert frame.harness_to_bare.notna().sum() == 1  # only the train row has a bare twin
    assert np.allclose(frame.ratio_to_pytorch, 1.0)
    assert (frame.peak_rss_mib > 0).all()
    assert "torch" in json.loads(frame.versions[0])
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_harness_loop_takes_the_bare_loops_fixed_rate():
    # The bare loops step torch's / MindSpore's SGD at one rate; the run default (cosine) would differ.
    config = build_config({"model": "lenet5", "batch_size": 8, "epochs": 3, **SETTINGS})
    assert (learning_rates(config.train, 5) == SETTINGS["learning_rate"]).all()


@pytest.mark.parametrize("flags", [["--batch-sizes", "0"], ["--batch-sizes", "8,x"], ["--models", "lenet9"],
                                   ["--backends", "tensorflow"], ["--repeats", "0"], ["--steps", "-1"],
                                   ["--threads", "0"]])
def test_bad_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, flags):
    assert main(["bench", *TINY, *flags, "--reports", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(HarnessError, match="larger than the 100"):
        make_plan(100, 128, 10)


def test_plans_time_whole_batches_in_segments_and_cycle_a_small_pool():
    assert make_plan(100, 64, 3) == make_plan(100, 64, 3) and make_plan(100, 64, 3).steps == 3  # 1 batch, 3 epochs
    plan = make_plan(60_000, 256, 200)  # 8 segments of 25 steps
    assert (plan.segments, plan.images, plan.epochs, plan.steps) == (8, 256 * 25, 1, 200)
    assert (make_plan(60_000, 64, 60).segments, make_plan(60_000, 64, 60).steps) == (2, 60)
    assert make_plan(60_000, 64, 24).segments == 1  # segments of at least 25 steps
    assert make_plan(60_000, 1, 10_000).segments == 8
    assert make_plan(10_000, 64, 201).steps == 8 * 26  # rounded up, never fewer than asked
    assert default_counts("vgg11")[0] < default_counts("lenet5")[0]


def test_each_segment_takes_the_next_window_of_the_pool_and_cycles():
    plan = make_plan(1_000, 10, 30)  # 300 images a measurement: three windows in the pool
    starts = [plan.window(index).start for index in range(1, 8)]
    assert starts == [300, 600, 0, 300, 600, 0, 300]
    assert {plan.window(index).steps for index in range(5)} == {plan.steps}
    assert make_plan(100, 64, 3).window(4).start == 0  # a pool of one window stays on it


def test_each_compared_pair_is_warmed_up_then_timed_apart_in_alternating_order(monkeypatch):
    calls = []

    class FakeSubject:
        def timers(self, plan):
            return {phase: (lambda phase=phase: calls.append(phase) or 1.0) for phase in PHASES}

    monkeypatch.setattr("harness.bench.measure.result_row",
                        lambda subject, phase, plan, seconds, peak, scope: {"phase": phase, "seconds": seconds})
    rows = measure(FakeSubject(), make_plan(100, 10, 2), repeats=3, warmup=1)
    assert calls == ["train", "train-bare",  # the warm-up, then the repeats
                     "train", "train-bare", "train-bare", "train", "train", "train-bare",
                     "infer-native", "infer-onnxruntime",
                     "infer-native", "infer-onnxruntime", "infer-onnxruntime", "infer-native",
                     "infer-native", "infer-onnxruntime"]
    assert [(row["phase"], len(row["seconds"])) for row in rows] == [(phase, 3) for phase in PHASES]
    assert all(isinstance(row["under_load"], bool) and row["cores"] >= 1 for row in rows)  # the load rides along


def test_a_repeat_takes_turns_abba_over_its_segments_and_sums_them(monkeypatch):
    calls = []

    class FakeSubject:
        def timers(self, plan):
            seconds = {"train": 1.0, "train-bare": 2.0, "infer-native": 1.0, "infer-onnxruntime": 1.0}
            return {phase: (lambda phase=phase: calls.append((phase, plan.start)) or seconds[phase])
                    for phase in PHASES}

    monkeypatch.setattr("harness.bench.measure.result_row",
                        lambda subject, phase, plan, seconds, peak, scope: {"phase": phase, "seconds": seconds})
    plan = make_plan(1_000, 1, 100)  # 4 segments of 25 steps
    rows = measure(FakeSubject(), plan, repeats=2, warmup=1)
    train = [(phase, start) for phase, start in calls if phase.startswith("train")][2:]  # after the warm-up
    assert [phase for phase, _ in train] == ["train", "train-bare", "train-bare", "train"] * 2 + \
        ["train-bare", "train", "train", "train-bare"] * 2  # the second repeat opens with the other phase
    assert [start for _, start in train[::2]] == [25, 50, 75, 100, 125, 150, 175, 200]  # both on each window
    assert [start for _, start in train[1::2]] == [25, 50, 75, 100, 125, 150, 175, 200]
    assert rows[PHASES.index("train")]["seconds"] == [4.0, 4.0]  # each repeat: its 4 segments
    assert rows[PHASES.index("train-bare")]["seconds"] == [8.0, 8.0]
    assert rows[PHASES.index("train")]["harness_to_bare"] == 2.0


def test_harness_to_bare_is_taken_repeat_by_repeat(monkeypatch):
    # The model slows as it trains: the median of each column comes from another repeat; the pairs do not.
    timed = {"train": iter([9.0, 1.0, 2.0, 3.0]), "train-bare": iter([9.0, 1.2, 1.9, 3.0])}  # warm-up first

    class FakeSubject:
        def timers(self, plan):
            return {phase: (lambda phase=phase: next(timed[phase]) if phase in timed else 1.0) for phase in PHASES}

    monkeypatch.setattr("harness.bench.measure.result_row",
                        lambda subject, phase, plan, seconds, peak, scope: {"phase": phase})
    train = measure(FakeSubject(), make_plan(100, 10, 2), repeats=3, warmup=1)[PHASES.index("train")]
    # 1.2, 0.95, 1.0 repeat by repeat; the medians' ratio would read 1.9 / 2.0 = 0.95
    assert (train["harness_to_bare"], train["harness_to_bare_min"], train["harness_to_bare_max"]) == \
        pytest.approx((1.0, 0.95, 1.2))


def test_ratio_to_pytorch_pairs_rows_by_model_phase_and_batch():
    rows = [{"backend": b, "model": "m", "phase": p, "batch_size": 64, "images_per_s": v}
            for b, p, v in [("pytorch", "train", 90.0), ("pytorch", "train-bare", 100.0),
                            ("mindspore", "train", 45.0), ("mindspore", "train-bare", 50.0)]]
    frame = add_ratios(pd.DataFrame(rows)).set_index(["backend", "phase"])
    assert frame.loc[("mindspore", "train"), "ratio_to_pytorch"] == pytest.approx(0.5)
    assert frame.loc[("mindspore", "train-bare"), "ratio_to_pytorch"] == pytest.approx(0.5)
    assert frame.loc[("pytorch", "train"), "ratio_to_pytorch"] == pytest.approx(1.0)


def test_speed_table_has_a_row_per_phase_and_skips_what_a_run_did_not_record():
    runs = pd.DataFrame([
        {"backend": "pytorch", "model": "lenet5", "images_per_s": 100.0, "infer_native_images_per_s": 1000.0,
         "infer_onnx_images_per_s": 2000.0},
        {"backend": "mindspore", "model": "lenet5", "images_per_s": 50.0, "infer_native_images_per_s": 3000.0,
         "infer_onnx_images_per_s": None}])
    speed = speed_table({"runs": runs}).set_index(["backend", "phase"])
    assert speed.loc[("mindspore", "train"), "ratio_to_pytorch"] == pytest.approx(0.5)
    assert speed.loc[("mindspore", "infer-native"), "ratio_to_pytorch"] == pytest.approx(3.0)
    assert ("mindspore", "infer-onnxruntime") not in speed.index
    assert speed.loc[("pytorch", "infer-onnxruntime"), "ratio_to_pytorch"] == pytest.approx(1.0)


def test_a_run_records_both_inference_speeds(tmp_path):
    from harness.training.run import execute

    config = build_config({"backend": "pytorch", "model": "lenet-tiny", "dataset": "synthetic", "epochs": 1,
                           "batch_size": 32, "limit_train": 64, "limit_test": 32})
    info = json.loads((execute(config, tmp_path, quiet=True).run_dir / "run.json").read_text())
    assert info["infer_native_images_per_s"] > 0 and info["infer_onnx_images_per_s"] > 0


def test_the_pytorch_loops_draw_their_own_dropout_masks_and_stay_the_same_model(tmp_path):
    spec, data = load_bench_data("simple-cnn", "synthetic", None, 256, SETTINGS["seed"])  # simple-cnn has a Dropout
    subject = Subject("pytorch", spec, data, "cpu", tmp_path, None)
    plan = make_plan(len(data.train_x), 16, 8)
    for repeat in range(3):  # alternating, as measure() runs them
        timers = subject.timers(plan.window(repeat + 1))
        for phase in ("train", "train-bare") if repeat % 2 == 0 else ("train-bare", "train"):
            timers[phase]()
    harness, bare = subject.backend.get_weights(subject.train_model), subject.backend.get_weights(subject.bare_model)
    assert not np.array_equal(harness["fc1.weight"], subject.weights["fc1.weight"])  # both trained
    for name, value in harness.items():  # drawn from one stream in turn, the masks differed: 0.076 apart
        np.testing.assert_array_equal(value, bare[name], err_msg=name)
