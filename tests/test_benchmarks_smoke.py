"""The benchmark scripts, in small configurations: they run and their quality numbers hold.

Timings are printed by the scripts (see docs/benchmarks.md), never asserted.
"""

import importlib
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")

pytestmark = pytest.mark.backends("tensorflow")


@pytest.fixture(scope="module")
def bench():
    # The scripts import their shared helpers as `_common`, as when run by path.
    sys.path.insert(0, BENCHMARKS)
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(BENCHMARKS)


class TestBenchStep:
    def test_every_configuration_trains(self, bench):
        bench_step = bench("bench_step")
        rows = (
            "none",
            "Keras L1",
            "L1Regularizer + prox",
            "GroupLassoRegularizer + prox",
            "LogSumRegularizer + prox",
        )
        results = bench_step.run(
            sizes=(16, 32, 4),
            batch=8,
            rows=rows,
            optimizers=("SGD", "Adam"),
            jit=(False,),
            steps=2,
            repeats=1,
            warmup=1,
        )
        assert [(r["row"], r["optimizer"]) for r in results] == [
            (row, optimizer) for optimizer in ("SGD", "Adam") for row in rows
        ]
        assert all(r["ms"] > 0 and math.isfinite(r["loss"]) for r in results)
        # Keras's subgradient L1 never lands on zero.
        assert all(r["sparsity"] == 0 for r in results if r["row"] == "Keras L1")
        assert bench_step.table(results).count("\n") == len(rows) + 1
        # One round: each paired ratio is that round's, its percentiles too.
        by_key = {(r["row"], r["optimizer"]): r for r in results}
        ratio = by_key["Keras L1", "SGD"]["round_ms"][0] / by_key["none", "SGD"]["round_ms"][0]
        paired = bench_step.paired_table(results)
        assert paired.count("\n") == len(rows)  # header, rule, every row but none
        assert f"| Keras L1 | {ratio:.3f} ({ratio:.3f}–{ratio:.3f}) |" in paired


class TestBenchQuality:
    def test_proximal_optimizer_finds_the_lasso_support(self, bench):
        bench_quality = bench("bench_quality")
        results = {r["method"]: r for r in bench_quality.run(**bench_quality.QUICK)}
        for method in (
            "L1Regularizer + ProximalOptimizer(SGD)",
            "L1Regularizer + ProximalOptimizer(Adam)",
        ):
            assert results[method]["same_support_as_lasso"]
            assert results[method]["max_diff_to_lasso"] < 1e-5
            assert abs(results[method]["objective_vs_lasso"]) < 1e-6
        assert results["scikit-learn Lasso"]["recall"] == 1.0
        assert results["Keras L1 + Adam"]["exact_zeros"] == 0


class TestBenchLogging:
    def test_logger_reports_the_sparsity_of_the_model(self, bench):
        bench_logging = bench("bench_logging")
        results = bench_logging.run(sizes=("1M",), repeats=1, fit_samples=512, fit_repeats=1)
        times = results["epoch_end"]["1M"]
        # Half of the weights are exactly zero, drawn at random.
        assert times["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert all(times[name] > 0 for name in ("floor", "logger", "logger + log_dir"))
        assert set(results["fit"]) == {"without logger", "with logger"}


class TestBenchWalltime:
    def test_every_solver_reaches_the_reference_solution(self, bench):
        bench_walltime = bench("bench_walltime")
        results = bench_walltime.run(**bench_walltime.QUICK)
        assert [r["solver"] for r in results] == [
            "scikit-learn Lasso (tol=1e-4, default)",
            "L1Regularizer + ProximalOptimizer(SGD)",
        ]
        assert all(r["solved"] for r in results)


class TestBenchDigits:
    def test_sparsity_targets_are_met(self, bench):
        bench_digits = bench("bench_digits")
        results = {(r["method"], r["target"]): r for r in bench_digits.run(**bench_digits.QUICK)}
        assert results[("dense", 0.0)]["sparsity"] == 0
        assert results[("dense", 0.0)]["accuracy"] > 0.7
        assert results[("magnitude pruning + fine-tune", 0.5)]["sparsity"] == pytest.approx(
            0.5, abs=1e-3
        )
        l1 = results[("L1 + prox (Adam)", 0.5)]
        assert l1["sparsity"] >= 0.5
        # Fine-tuning holds the zero pattern.
        tuned = results[("L1 + prox (Adam), fine-tuned", 0.5)]
        assert tuned["sparsity"] == l1["sparsity"]
        assert tuned["layers"] == l1["layers"]
        assert tuned["units"] == l1["units"]
        # The per-layer sparsities weighted by kernel size (64x32, 32x10) are the total.
        sizes = [64 * 32, 32 * 10]
        for row in (l1, results[("magnitude pruning + fine-tune", 0.5)]):
            weighted = sum(s * n for s, n in zip(row["layers"], sizes)) / sum(sizes)
            assert weighted == pytest.approx(row["sparsity"], abs=1e-9)
        assert results[("dense", 0.0)]["units"] == [32]
        assert 0 < l1["units"][0] <= 32
        from_dense = results[("log-sum + prox (SGD) from dense", 0.5)]
        from_dense_tuned = results[("log-sum + prox (SGD) from dense, fine-tuned", 0.5)]
        assert from_dense["sparsity"] >= 0.5
        assert from_dense_tuned["layers"] == from_dense["layers"]
        # Started from the dense weights, it keeps their accuracy at this sparsity
        # (here 88.9%: dense 81.1% after its 6 epochs, pruning 82.9%, L1 + prox
        # (Adam) fine-tuned 60.9%).
        assert from_dense_tuned["accuracy"] > 0.85


class TestBenchCompact:
    def test_sizes_and_latencies_of_each_model(self, bench):
        bench_compact = bench("bench_compact")
        results = {r["model"]: r for r in bench_compact.run(**bench_compact.QUICK)}
        mlp, cnn = results["MLP"], results["CNN"]
        # MACs in closed form: Dense in*out; Conv kh*kw*cin*cout per output position.
        assert mlp["macs"][0] == 64 * 256 + 256 * 128 + 128 * 10
        assert cnn["macs"][0] == (
            8 * 8 * 9 * 1 * 32 + 8 * 8 * 9 * 32 * 64 + 4 * 4 * 9 * 64 * 128 + 128 * 10
        )
        assert mlp["params"][0] == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
        # The MLP is compacted exactly: no more of anything, the same predictions.
        assert mlp["refused"] is None
        assert mlp["params"][1] <= mlp["params"][0]
        assert mlp["macs"][1] <= mlp["macs"][0]
        assert mlp["accuracy"][1] == mlp["accuracy"][0]
        assert 0 < mlp["dense_accuracy"] <= 1 and 0 < mlp["finetuned_accuracy"] <= 1
        assert mlp["max_output_diff"] < 1e-4
        assert mlp["macs"][1] <= mlp["rounded_macs"] <= mlp["macs"][0]
        # Original, exact and rounded compaction.
        assert all(len(ms) == 3 and min(ms) > 0 for ms in mlp["latency_ms"].values())
        # The CNN is compacted the same way, or refused with compact_model's own message.
        if cnn["refused"]:
            assert "compact_model" in cnn["refused"]
            assert all(len(ms) == 1 for ms in cnn["latency_ms"].values())
        else:
            assert cnn["accuracy"][1] == cnn["accuracy"][0]
        sizes, latency = bench_compact.table(list(results.values())).split("\n\n")
        assert sizes.count("\n") == 2 + 1
        # Header, rule, then per model 1 batch x 2 jit x 2 compactions (1 if refused).
        rows = sum(2 * (1 if r["refused"] else 2) for r in results.values())
        assert latency.count("\n") == 2 + rows - 1
