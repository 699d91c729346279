"""The compiled training step and the Trainer the harness drives.

One graph-mode Cell does forward, backward and the torch.optim update
(``optim.py``); the learning rate and the other per-step values are a Tensor
input, so changing them never recompiles. A new input shape (the last, smaller
batch of an epoch) compiles once more.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn, ops

try:  # MindSpore 2.10's graph executor and mode getter (private: used as Cell.__call__ and Cell._predict use them;
    # ms.get_context("mode") takes 11 us); where they are missing, every call is Cell.__call__
    from mindspore.context import _get_mode
    from mindspore.graph.api import _cell_graph_executor, _convert_python_data
except ImportError:
    _cell_graph_executor = _convert_python_data = _get_mode = None

from harness.config import TrainConfig
from harness.model.spec import ModelSpec

from .build import GraphCell, MsModel
from .optim import hyper_values, make_optimizer, slot_names, slot_parameters


class _WithLoss(nn.Cell):
    """The net's layers with the step's Dropout masks, then mean cross-entropy as torch's cross_entropy."""

    def __init__(self, net: GraphCell) -> None:
        super().__init__(auto_prefix=False)  # keep the parameter names of ``net`` unchanged
        self.net = net
        # Explicit: mean over the batch, no class weights, no smoothing; labels int32 (MindSpore's CPU kernel).
        self.loss = nn.CrossEntropyLoss(weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0)

    def construct(self, x, y, masks):
        # MindSpore 2.10's CPU Dropout kernel draws from one std::mt19937 in parallel tasks: its masks
        # are not repeatable with any seed (simple-cnn: 1 run in 4 differed by step 30). Drawn on the host.
        return self.loss(self.net.outputs(x, masks)[-1], y)


class _TrainStep(nn.Cell):
    """Forward, gradients of the trainable tensors, update; returns the loss (as nn.TrainOneStepCell)."""

    def __init__(self, with_loss: nn.Cell, optimizer: nn.Cell, params: list[ms.Parameter]) -> None:
        super().__init__(auto_prefix=False)
        self.with_loss = with_loss
        self.with_loss.set_grad()
        self.optimizer = optimizer
        self.weights = ms.ParameterTuple(params)
        # One forward for the loss and the gradients (sens 1.0: d(mean loss)/d(weights)), as torch's backward.
        # nn.TrainOneStepCell's loss-then-GradOperation runs the forward twice: two Dropout masks per step,
        # drawn in whichever order the graph runs the two branches, so runs with one seed differed.
        self.value_and_grad = ms.value_and_grad(self.with_loss, grad_position=None, weights=self.weights)

    def construct(self, x, y, hyper, masks):
        loss, grads = self.value_and_grad(x, y, masks)
        return ops.depend(loss, self.optimizer(grads, hyper))


class _CompiledCalls:
    """Calls a graph-mode Cell, running the graph it compiled for the arguments' shapes directly after the first
    call with those shapes.

    ``Cell.__call__`` enters ``compile`` on every call, even when that graph exists: it rebuilds the argument key
    and sets ``compile_phase`` on every sub-cell again (recursive ``__setattr__``): ~0.2 ms a call on this CPU, a
    sixth of a LeNet5 step at batch 1. MindSpore's own fast path for repeated calls (``Cell._predict``, for its
    "prefill" and "increment" phases) skips it the same way: ``get_args_for_run`` on the arguments, then the
    graph executor on the compiled phase. The first call of each shape key goes through ``Cell.__call__``, and so
    does every call outside GRAPH_MODE (``harness port`` traces in PyNative) or without that executor.
    """

    def __init__(self, cell: nn.Cell) -> None:
        self.cell = cell
        self._compiled: dict[tuple, tuple[str, list]] = {}  # shape key -> (compiled phase, mutable-argument flags)

    def __call__(self, *args):
        if _cell_graph_executor is None or _get_mode() != ms.GRAPH_MODE:
            return self.cell(*args)
        key = (self.cell.phase, tuple(_shape_key(arg) for arg in args))
        compiled = self._compiled.get(key)
        if compiled is None:
            result = self.cell(*args)
            self._compiled[key] = (self.cell.phase_cache[self.cell.phase], list(self.cell._has_mutable_args_list or []))
            return result
        phase, mutable_flags = compiled
        executor = _cell_graph_executor._graph_executor
        run_args = executor.get_args_for_run(self.cell, args, {}, mutable_flags, [], False, False)
        return _convert_python_data(executor(tuple(run_args), phase))


def _shape_key(arg) -> tuple:
    """What of an argument selects its compiled graph: shape and dtype of a tensor, recursively for a tuple."""
    if isinstance(arg, (tuple, list)):
        return (type(arg).__name__, tuple(_shape_key(item) for item in arg))
    return (tuple(arg.shape), str(arg.dtype))


def mask_arrays(spec: ModelSpec, seed: int, step: int, batch: int) -> list[np.ndarray]:
    """Each Dropout's mask for one train step, in numpy: keep with probability 1 - p, kept values scaled by
    1 / (1 - p) (torch's and nn.Dropout's scaling), drawn keyed by (seed, layer position, step), so a run is
    repeatable and a resumed run continues the stream from the step it stopped at."""
    masks = []
    for position, layer, shape in spec.dropouts():
        draws = np.random.default_rng([seed, position, step]).random((batch, *shape), dtype=np.float32)
        # In place into the draws: the values of (draws >= p) * scale without a third array.
        masks.append(np.multiply(draws >= np.float32(layer.p), np.float32(1.0 / (1.0 - layer.p)), out=draws))
    return masks


def as_mask_input(masks: Sequence[np.ndarray]):
    """The masks as the train step's input: tensors sharing the arrays' memory, in a mutable tuple."""
    # A plain tuple is a graph constant: new masks would recompile every step. (An empty mutable fails to run.)
    return ms.mutable(tuple(ms.Tensor.from_numpy(mask) for mask in masks)) if masks else ()


@dataclass(frozen=True)
class Prepared:
    """One batch made ready for the train step, all in numpy (MindSpore's own objects are made on the stepping
    thread: ``ms.mutable`` keeps a module-global set that its compile-cache lookup uses on every call)."""

    x: np.ndarray  # float32, C-contiguous
    y: np.ndarray  # int32: MindSpore's CPU cross-entropy kernel takes int32 labels
    masks: tuple[np.ndarray, ...]
    dropout_step: int  # the step of the mask stream these masks were drawn for


class MsTrainer:
    """Holds the optimizer state (as Parameters of the compiled step); ``step`` runs one batch."""

    def __init__(self, model: MsModel, train: TrainConfig, decay_names: set[str]) -> None:
        self.model = model
        self.train = train
        model.dropout_steps = 0  # the mask stream starts at the run's seed, as torch's trainer reseeds its generator
        self.names = model.spec.trainable_names()
        params = [model.params[name] for name in self.names]
        self.optimizer = make_optimizer(params, [name in decay_names for name in self.names], train)
        self.cell = _TrainStep(_WithLoss(model.net), self.optimizer, params)
        self.run_cell = _CompiledCalls(self.cell)
        self.steps = 0  # optimizer steps taken: Adam's t; for SGD, whether the momentum buffers exist

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        """One optimizer step in train mode; returns the batch's mean cross-entropy."""
        return self.step_prepared(self.preparer()(x, y), learning_rate)

    def prepare_ahead(self) -> bool:
        """Whether making the next batch on another thread gains: always here. MindSpore's kernels leave cores
        idle between ops and its thread pool does not wait on a busy core: simple-cnn at batch 64 (its Dropout
        masks are 1.9 MB a step), default threads, 20.5 ms a step made ahead against 22.8 made in line."""
        return True

    def prepared_bytes(self, batch_size: int) -> int:
        """Bytes of Dropout masks ``preparer()`` draws for a batch of ``batch_size``."""
        return sum(4 * batch_size * math.prod(shape) for _, _, shape in self.model.spec.dropouts())  # float32

    def preparer(self) -> Callable[[np.ndarray, np.ndarray], Prepared]:
        """What turns the host batches of the coming steps, in order, into ``Prepared`` ones: numpy only, so it
        may run on another thread while a step runs (the loop prepares the next batch there). The Dropout masks
        of the n-th batch it prepares are those of the n-th step from now: every batch must reach
        ``step_prepared`` in that order, and a new preparer is needed after any other step."""
        spec, seed, steps = self.model.spec, self.train.seed, itertools.count(self.model.dropout_steps)

        def prepare(x: np.ndarray, y: np.ndarray) -> Prepared:
            step = next(steps)
            return Prepared(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int32),
                            tuple(mask_arrays(spec, seed, step, len(x))), step)

        return prepare

    def step_prepared(self, prepared: Prepared, learning_rate: float) -> float:
        """``step`` on a batch made by ``preparer()``; returns the batch's mean cross-entropy."""
        if prepared.dropout_step != self.model.dropout_steps:
            raise RuntimeError(f"batch prepared with the Dropout masks of step {prepared.dropout_step}, but the next "
                               f"step is {self.model.dropout_steps}: take prepared batches in order, once each")
        if not self.model.net.training:  # explicit: predict() and activations() leave the shared net in eval mode
            self.cell.set_train(True)
        # from_numpy shares the arrays' memory: ``prepared`` keeps them alive until asnumpy() has synchronised.
        inputs = (ms.Tensor.from_numpy(prepared.x), ms.Tensor.from_numpy(prepared.y),
                  ms.Tensor.from_numpy(hyper_values(self.train, learning_rate, self.steps)),
                  as_mask_input(prepared.masks))
        loss = float(self.run_cell(*inputs).asnumpy())
        self.steps += 1
        self.model.dropout_steps += 1
        return loss

    def state(self) -> dict[str, np.ndarray]:
        """Optimizer state by canonical names, as torch.optim keeps it; empty before the first step."""
        slots = slot_names(self.train)
        if self.steps == 0 or not slots:
            return {}
        out = {}
        for slot in slots:
            for name, param in zip(self.names, slot_parameters(self.optimizer, slot)):
                out[f"{name}.{slot}"] = np.array(param.asnumpy(), dtype=np.float32, copy=True)
        if self.train.optimizer != "sgd":
            out["step"] = np.asarray(float(self.steps), dtype=np.float32)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()``'s output (from either backend); an empty dict resets to no state."""
        slots = slot_names(self.train)
        wanted = [f"{name}.{slot}" for slot in slots for name in self.names]
        present = [key for key in wanted if key in state]
        if present and len(present) != len(wanted):
            missing = sorted(set(wanted) - set(present))
            raise ValueError(f"optimizer state is partial: missing {missing[:5]}; give every tensor or none")
        for slot in slots:
            for name, param in zip(self.names, slot_parameters(self.optimizer, slot)):
                key = f"{name}.{slot}"
                value = state[key] if present else np.zeros(param.shape, np.float32)
                param.set_data(ms.Tensor(np.array(value, dtype=np.float32, copy=True).reshape(param.shape)))
        if self.train.optimizer == "sgd":
            self.steps = 1 if present else 0
        else:
            self.steps = int(state["step"]) if present else 0
