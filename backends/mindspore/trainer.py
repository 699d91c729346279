"""The compiled training step and the Trainer the harness drives.

One graph-mode Cell does forward, backward and the torch.optim update
(``optim.py``); the learning rate and the other per-step values are a Tensor
input, so changing them never recompiles. A new input shape (the last, smaller
batch of an epoch) compiles once more.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from harness.config import TrainConfig
from harness.model.spec import Dropout, ModelSpec

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


def dropout_masks(spec: ModelSpec, seed: int, step: int, batch: int) -> tuple[ms.Tensor, ...]:
    """Each Dropout's mask for one train step: keep with probability 1 - p, kept values scaled by 1 / (1 - p)
    (torch's and nn.Dropout's scaling), drawn from numpy keyed by (seed, layer position, step), so a run is
    repeatable and a resumed run continues the stream from the step it stopped at."""
    masks = []
    for position, (layer, shape) in enumerate(zip(spec.layers, spec.output_shapes)):
        if isinstance(layer, Dropout):
            draws = np.random.default_rng([seed, position, step]).random((batch, *shape), dtype=np.float32)
            masks.append(ms.Tensor((draws >= np.float32(layer.p)) * np.float32(1.0 / (1.0 - layer.p))))
    # A plain tuple is a graph constant: new masks would recompile every step. (An empty mutable fails to run.)
    return ms.mutable(tuple(masks)) if masks else ()


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
        self.steps = 0  # optimizer steps taken: Adam's t; for SGD, whether the momentum buffers exist

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        """One optimizer step in train mode; returns the batch's mean cross-entropy."""
        if not self.model.net.training:  # explicit: predict() and activations() leave the shared net in eval mode
            self.cell.set_train(True)
        # from_numpy shares the arrays' memory: ``inputs`` keeps them alive until asnumpy() has synchronised.
        inputs = (ms.Tensor.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                  ms.Tensor.from_numpy(np.ascontiguousarray(y, dtype=np.int32)),  # int64 -> int32 labels
                  ms.Tensor.from_numpy(hyper_values(self.train, learning_rate, self.steps)),
                  dropout_masks(self.model.spec, self.train.seed, self.model.dropout_steps, len(x)))
        loss = float(self.cell(*inputs).asnumpy())
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
