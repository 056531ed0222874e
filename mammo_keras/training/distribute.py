"""Training on several GPUs or machines with tf.distribute, selected by name (`--strategy`).

    "default"       no distribution: TensorFlow's default strategy (one device)
    "mirrored"      MirroredStrategy: every local GPU holds a replica; gradients all-reduced
    "multi_worker"  MultiWorkerMirroredStrategy: several machines (workers), each with its GPUs.
                    The cluster comes from the TF_CONFIG environment variable, which TensorFlow
                    reads itself; every worker runs the same command with its own task index.

Keras builds variables on the strategy that is current when a model is created and trains
with that strategy; `build_model` builds inside the strategy (and precision) chosen by an
enclosing `training_scope`, which is what `mammo-keras reproduce --strategy --precision` does.
A batch of `batch_size` from the input pipeline is the *global* batch: each of R replicas gets
batch_size / R, so the protocol (batch, learning rate, epochs) is unchanged by scaling out.

Cluster check, the same code the two-worker test runs (one command per machine):

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python -m mammo_keras.training.distribute --out check_worker0

Each worker trains a tiny network on the same synthetic task and writes `weights.npz` and
`result.json` (losses, a weight checksum) to `--out`; the checksums must agree.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default"):
    """The tf.distribute strategy called `name` (one of STRATEGIES)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        # Ring all-reduce works on CPU (gRPC) and GPU; NCCL is picked automatically on GPUs by AUTO.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return tf.distribute.get_strategy()


def task_info(strategy) -> dict:
    """Worker type and index (chief = worker 0) and replica count, for logs and output paths."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) or "worker"
    task_id = getattr(resolver, "task_id", None) or 0
    return {"task_type": task_type, "task_id": int(task_id),
            "is_chief": task_type == "chief" or (task_type == "worker" and int(task_id) == 0),
            "replicas": int(strategy.num_replicas_in_sync)}


# The strategy and precision of the enclosing `training_scope`. A context variable, not a scope
# stack: `keras.backend.clear_session()` (called between folds) resets TensorFlow's strategy stack
# and Keras' dtype policy, so each model is built under them again by `build_model`.
_ACTIVE: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("mammo_keras_training", default=None)


@contextlib.contextmanager
def training_scope(strategy: str = "default", precision: str = "float32") -> Iterator[object]:
    """Within the block, `build_model` builds under `strategy` with the dtype policy `precision`.

    Yields the strategy. `precision` is as in `mammo_keras.training.precision.policy_name`.
    Nothing global changes: the choice is read by `build_model` only.
    """
    from mammo_keras.training.precision import policy_name

    policy_name(precision)  # fail early on a bad name
    chosen = make_strategy(strategy)
    token = _ACTIVE.set((chosen, precision))
    try:
        yield chosen
    finally:
        _ACTIVE.reset(token)


def build_model(builder: Callable[[], object]):
    """`builder()` under the enclosing `training_scope`'s strategy and precision; float32 outputs.

    Outside a `training_scope` this is `builder()` (with float32 outputs, which float32 models
    already have). Keras keeps the strategy a model was built under and trains with it.
    """
    from mammo_keras.training.precision import precision_scope, with_float32_output

    active = _ACTIVE.get()
    if active is None:
        return with_float32_output(builder())
    strategy, precision = active
    with precision_scope(precision), strategy.scope():
        return with_float32_output(builder())


def ready_for_fit(model, dataset) -> None:
    """Let `model.fit` run under MultiWorkerMirroredStrategy (a no-op under any other strategy).

    Keras 3 (seen with 3.15.1; keras-team/keras#20585) cannot start `fit` on a model built under
    MultiWorkerMirroredStrategy: `Trainer._maybe_symbolic_build` passes the first (x, y) batch,
    a nested per-replica value, to `strategy.reduce`, which that strategy rejects ("Attempt to
    convert a value (PerReplica ...)"). Here the loss, metrics and optimizer are built from one
    plain batch in the strategy's scope instead, and that step is skipped for this model.
    """
    import tensorflow as tf

    strategy = getattr(model, "_distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    _patch_keras_multi_worker_logs()
    batch = next(iter(dataset.take(1)))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = _already_built


def _already_built(iterator=None, data_batch=None) -> None:
    """Stands in for `Trainer._maybe_symbolic_build` once `ready_for_fit` has built the model."""


def _patch_keras_multi_worker_logs() -> None:
    """Average per-replica scalar logs over the workers (Keras 3.15 reduces them along axis 0).

    Keras' `reduce_per_replica` calls `strategy.reduce("MEAN", v, axis=0)` on the scalar loss
    and metric values of each step when it runs on several workers, which TensorFlow rejects
    ("Invalid reduction dimension 0 for input with 0 dimensions"). This wraps it, once, so that
    scalars are averaged over replicas (`axis=None`); everything else goes to Keras unchanged.
    Gradients are all-reduced by the optimizer either way; this only concerns the logs.
    """
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "_mammo_keras_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            def mean(value):
                shape = getattr(value, "shape", None)
                if shape is not None and shape.rank == 0:  # a per-replica or a local scalar
                    return strategy.reduce("MEAN", value, axis=None)
                return original(value, strategy, reduction)

            return trainer.tree.map_structure(mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica._mammo_keras_patched = True
    trainer.reduce_per_replica = reduce_per_replica


# ---------------------------------------------------------------- cluster check (worker entry point)

def check_task(n: int = 256, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny learnable task, identical on every worker: bright centre = 1, dark centre = 0."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.float32)
    images = rng.normal(0.0, 0.2, (n, size, size, 1)).astype(np.float32)
    images[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += np.where(labels == 1, 1.0, -1.0)[
        :, None, None, None]
    return images, labels[:, None]


def check_model(size: int = 16):
    """A small CNN with a sigmoid output (float32 output whatever the policy)."""
    import keras

    inputs = keras.Input((size, size, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="cluster_check")


def weights_checksum(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def run_check(out: str | Path, *, strategy: str = "multi_worker", epochs: int = 4, batch_size: int = 32,
              seed: int = 0) -> dict:
    """Train `check_model` on `check_task` under `strategy`; write weights.npz and result.json.

    Returns the result: per-epoch losses, the weight checksum, task and replica count.
    """
    import keras
    import tensorflow as tf

    from mammo_keras.fileio import atomic_write_bytes, atomic_write_json

    keras.utils.set_random_seed(seed)
    chosen = make_strategy(strategy)
    images, labels = check_task(seed=seed)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    with chosen.scope():
        model = check_model(images.shape[1])
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    ready_for_fit(model, dataset)
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
    weights = [np.asarray(w) for w in model.get_weights()]
    result = {**task_info(chosen), "strategy": strategy, "loss": [float(v) for v in history.history["loss"]],
              "checksum": weights_checksum(weights)}
    out = Path(out)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    atomic_write_bytes(out / "weights.npz", buffer.getvalue())
    atomic_write_json(out / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mammo_keras.training.distribute",
        description="Cluster check: train a tiny network under a tf.distribute strategy on every "
                    "worker (cluster from TF_CONFIG) and write its weights and losses.")
    parser.add_argument("--out", required=True, help="folder for weights.npz and result.json")
    parser.add_argument("--strategy", default="multi_worker", choices=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_check(args.out, strategy=args.strategy, epochs=args.epochs, batch_size=args.batch_size,
                       seed=args.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
