"""Cost of one training step with each regularizer, with and without the proximal step.

An MLP (784-1024-1024-10 by default, batch 256) with the regularizer on every
kernel is trained one batch at a time with `train_on_batch`; each step
synchronizes (the loss comes back to the host), so the time is the whole step.
All configurations are built (each `--instances` times: two models of one
configuration differ in wall time) and warmed up first, then timed in blocks
of `--steps` steps, the models in a fresh random order in each of the
`--repeats` rounds so that drift of the machine hits all of them alike; the
reported time is the median block of all of a configuration's models. CPU
time of this process (all its threads) is reported too: other processes on a
shared machine stretch wall time a lot and CPU time little, so it is the
steadier measure of the work a step does; `--threads 1` makes it exactly
that (no idle spinning). Ratios are against "none" (no regularizer) and
"Keras L1" (`keras.regularizers.L1`) with the same optimizer and jit setting,
measured in the same run; the elastic-net rows also against "Keras L1L2", the
same two penalties.

    python benchmarks/bench_step.py            # full run, a few minutes on 2 cores
    python benchmarks/bench_step.py --quick    # small model, seconds
"""

import argparse
import statistics
import sys
import time

import _common
import keras
import numpy as np

import keras_l1

L1 = 1e-4

# name -> (regularizer factory or None, wrap the optimizer in ProximalOptimizer)
ROWS = {
    "none": (None, False),
    "Keras L1": (lambda: keras.regularizers.L1(L1), False),
    "Keras L1 + prox": (lambda: keras.regularizers.L1(L1), True),
    "L1Regularizer": (lambda: keras_l1.L1Regularizer(L1), False),
    "L1Regularizer + prox": (lambda: keras_l1.L1Regularizer(L1), True),
    "Keras L1L2": (lambda: keras.regularizers.L1L2(L1, L1), False),
    "ElasticNetRegularizer": (lambda: keras_l1.ElasticNetRegularizer(L1, L1), False),
    "ElasticNetRegularizer + prox": (lambda: keras_l1.ElasticNetRegularizer(L1, L1), True),
    "GroupLassoRegularizer": (lambda: keras_l1.GroupLassoRegularizer(L1), False),
    "GroupLassoRegularizer + prox": (lambda: keras_l1.GroupLassoRegularizer(L1), True),
    "LogSumRegularizer": (lambda: keras_l1.LogSumRegularizer(L1), False),
    "LogSumRegularizer + prox": (lambda: keras_l1.LogSumRegularizer(L1), True),
}
# The rows the target names; `--rows` adds the others (LogSumRegularizer).
DEFAULT_ROWS = tuple(row for row in ROWS if not row.startswith("LogSum"))
OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.01),
    "Adam": lambda: keras.optimizers.Adam(1e-3),
}


def build_model(row: str, optimizer: str, jit: bool, sizes, seed: int = 0):
    """The MLP of `sizes` with `row`'s regularizer on each kernel, compiled."""
    factory, proximal = ROWS[row]
    model = _common.mlp(sizes, factory, seed)
    inner = OPTIMIZERS[optimizer]()
    model.compile(
        keras_l1.ProximalOptimizer(inner) if proximal else inner,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def run(
    sizes=(784, 1024, 1024, 10),
    batch: int = 256,
    rows=DEFAULT_ROWS,
    optimizers=tuple(OPTIMIZERS),
    jit=(False, True),
    steps: int = 20,
    repeats: int = 7,
    warmup: int = 5,
    seed: int = 0,
    instances: int = 2,
) -> list:
    """Times every (row, optimizer, jit) configuration; returns one dict each.

    Each configuration is built `instances` times, and every block of every
    instance counts: on two threads, two models of the same configuration
    differ by up to 6% in wall time (the same computation; where their
    buffers and threads land), which one model per row would put into its
    ratios.

    Each dict has `row`, `optimizer`, `jit`, `ms` (median wall milliseconds
    per step), `best_ms` (the fastest block), `cpu_ms` (median CPU
    milliseconds of this process per step, all threads), `all_ms` (every
    block's wall time), `round_ms` (per round, the median block of the
    configuration's models), `sparsity` (fraction of exactly zero kernel weights
    after the timed steps) and `loss` (last loss).
    """
    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(rng.standard_normal((batch, sizes[0])).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, sizes[-1], size=(batch,)).astype("int32"))
    configs = [(row, opt, j) for j in jit for opt in optimizers for row in rows]
    models = {}
    for config in configs:
        for instance in range(instances):
            model = build_model(*config, sizes=sizes, seed=seed)
            for _ in range(warmup):
                model.train_on_batch(x, y)
            models[config, instance] = model
    blocks = {config: [] for config in configs}
    cpu_blocks = {config: [] for config in configs}
    round_blocks = {config: [[] for _ in range(repeats)] for config in configs}
    losses = {}
    keys = list(models)
    for round_index in range(repeats):
        for position in rng.permutation(len(keys)):
            config, instance = keys[position]
            model = models[config, instance]
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                loss = model.train_on_batch(x, y)
            ms = (time.perf_counter() - start) / steps * 1e3
            blocks[config].append(ms)
            round_blocks[config][round_index].append(ms)
            cpu_blocks[config].append((time.process_time() - cpu_start) / steps * 1e3)
            losses[config] = float(loss)
    results = []
    for config in configs:
        kernels = [w.numpy() for w in models[config, 0].trainable_weights if w.ndim == 2]
        zeros = sum(int(np.sum(k == 0)) for k in kernels)
        size = sum(k.size for k in kernels)
        results.append(
            {
                "row": config[0],
                "optimizer": config[1],
                "jit": config[2],
                "ms": statistics.median(blocks[config]),
                "best_ms": min(blocks[config]),
                "cpu_ms": statistics.median(cpu_blocks[config]),
                "all_ms": blocks[config],
                "round_ms": [statistics.median(ms) for ms in round_blocks[config]],
                "sparsity": zeros / size,
                "loss": losses[config],
            }
        )
    return results


def table(results, statistic: str = "ms") -> str:
    """Markdown: one line per row, per (optimizer, jit) the ms and both ratios.

    `statistic` is `"ms"` (the median block's wall time), `"best_ms"` (the
    fastest block) or `"cpu_ms"` (the median block's CPU time).
    """
    by_key = {(r["row"], r["optimizer"], r["jit"]): r for r in results}
    columns = list(dict.fromkeys((r["optimizer"], r["jit"]) for r in results))
    rows = list(dict.fromkeys(r["row"] for r in results))
    headers = ["configuration"] + [f"{opt}{' jit' if j else ''}" for opt, j in columns]
    lines = []
    for row in rows:
        cells = [row]
        for opt, j in columns:
            ms = by_key[(row, opt, j)][statistic]
            cell = f"{ms:.1f} ms"
            if ("none", opt, j) in by_key and row != "none":
                cell += f" · {ms / by_key[('none', opt, j)][statistic]:.3f}×none"
            if ("Keras L1", opt, j) in by_key and row not in ("none", "Keras L1"):
                cell += f" · {ms / by_key[('Keras L1', opt, j)][statistic]:.3f}×L1"
            # Elastic net's like-for-like baseline is Keras's L1L2 (two penalties).
            if ("Keras L1L2", opt, j) in by_key and row.startswith("ElasticNet"):
                cell += f" · {ms / by_key[('Keras L1L2', opt, j)][statistic]:.3f}×L1L2"
            cells.append(cell)
        lines.append(cells)
    return _common.markdown_table(headers, lines)


def paired_table(results) -> str:
    """Markdown: each row's wall-time ratio to "none", paired by round.

    A round times every model once, in a fresh random order, so a row and
    "none" (same optimizer and jit setting) measured in one round share the
    state of the machine; their ratio leaves out its drift between rounds.
    Each cell is the median of the per-round ratios and, in brackets, their
    10th and 90th percentiles: how far the ratio of a single round moves.
    """
    by_key = {(r["row"], r["optimizer"], r["jit"]): r for r in results}
    columns = list(dict.fromkeys((r["optimizer"], r["jit"]) for r in results))
    rows = [row for row in dict.fromkeys(r["row"] for r in results) if row != "none"]
    headers = ["configuration"] + [f"{opt}{' jit' if j else ''}" for opt, j in columns]
    lines = []
    for row in rows:
        cells = [row]
        for opt, j in columns:
            ratios = np.divide(
                by_key[(row, opt, j)]["round_ms"], by_key[("none", opt, j)]["round_ms"]
            )
            low, median, high = np.percentile(ratios, [10, 50, 90])
            cells.append(f"{median:.3f} ({low:.3f}–{high:.3f})")
        lines.append(cells)
    return _common.markdown_table(headers, lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, for a smoke run")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per model")
    parser.add_argument("--instances", type=int, default=2, help="models built per configuration")
    parser.add_argument("--rows", nargs="*", default=list(DEFAULT_ROWS), choices=list(ROWS))
    parser.add_argument("--optimizers", nargs="*", default=list(OPTIMIZERS))
    parser.add_argument("--jit", nargs="*", default=["off", "on"], choices=["off", "on"])
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: default)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    options = {
        "rows": tuple(args.rows),
        "optimizers": tuple(args.optimizers),
        "jit": tuple(j == "on" for j in args.jit),
        "steps": args.steps,
        "repeats": args.repeats,
        "instances": args.instances,
    }
    if args.quick:
        options.update(sizes=(64, 128, 10), batch=32, steps=3, repeats=2, warmup=2, instances=1)
    print(f"machine: {_common.machine()}; load average at start {_common.load_average()}")
    print(f"threads: {args.threads or 'TensorFlow default'}; command: {' '.join(sys.argv)}")
    results = run(**options)
    print("Wall time per step, median block:")
    print(table(results))
    print("\nWall-time ratio to none, paired by round: median (10th–90th percentile):")
    print(paired_table(results))
    print("\nCPU time per step (this process, all threads), median block:")
    print(table(results, "cpu_ms"))
    print(f"load average at end {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
