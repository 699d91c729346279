"""Training step with torch.optim; the harness supplies the learning rate of every step."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from harness.config import TrainConfig
from harness.machine import cores

from .build import GraphNet, TorchModel, torch_name
from .noise import dropout_noise, native_draw_ready

# Canonical optimizer-state names -> torch's per-parameter state keys.
_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


def _optimizer(model: TorchModel, train: TrainConfig, decay_names: set[str]) -> torch.optim.Optimizer:
    named = dict(model.module.named_parameters())
    canonical = {torch_name(n): n for n in model.spec.trainable_names()}
    decayed = [p for key, p in named.items() if canonical[key] in decay_names]
    plain = [p for key, p in named.items() if canonical[key] not in decay_names]
    # Explicit groups: weight decay on exactly the tensors the harness chose, as on every backend. An empty group
    # is left out: torch.optim would walk it on every step all the same.
    groups = [group for group in ({"params": decayed, "weight_decay": train.weight_decay},
                                  {"params": plain, "weight_decay": 0.0}) if group["params"]]
    # foreach: each update op once over all tensors, not a Python loop of ops per tensor (torch's default only on
    # accelerators). The same kernels per tensor, so the same bits (tests/training/test_loop_speedups.py); the
    # update of LeNet5's ten tensors takes 68 us instead of 81 on this CPU.
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.learning_rate, momentum=train.momentum,
                               dampening=train.dampening, nesterov=train.nesterov, foreach=True)
    cls = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=train.learning_rate, betas=(train.beta1, train.beta2), eps=train.eps, foreach=True)


class Batch(NamedTuple):
    """One batch made ready for a step by ``TorchTrainer.preparer()``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    noise: dict[int, torch.Tensor] | None  # each Dropout's noise by layer index, drawn ahead; None: in the forward
    rng_after: torch.Tensor | None  # torch's CPU generator right after ``noise`` was drawn


def _as_batch(x: np.ndarray, y: np.ndarray) -> Batch:
    return Batch(torch.from_numpy(x), torch.from_numpy(y), None, None)


class _Update:
    """``optimizer.step()`` without its per-step Python around the update: the functional form that torch.optim's
    own ``step`` calls (``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``, AdamW included), with the same group
    settings, on the state tensors the optimizer made in its first step, which that form updates in place.
    The same function on the same tensors, so the same bits (tests/training/test_loop_speedups.py); LeNet5's
    update takes 52 us instead of 69 on this CPU (the step's wrapper, hooks and state lookups left out).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.sgd = isinstance(optimizer, torch.optim.SGD)
        self.groups = []
        for group in optimizer.param_groups:
            states = [optimizer.state.get(p, {}) for p in group["params"]]
            if self.sgd:  # no buffers without momentum: the functional form then reads none
                lists = ([s.get("momentum_buffer") for s in states],)
            else:
                lists = ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                         [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
                         [s["step"] for s in states])
            self.groups.append((group, lists))

    @staticmethod
    def ready(optimizer: torch.optim.Optimizer) -> bool:
        """Whether the optimizer holds the state of every parameter (made by its first step)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if isinstance(optimizer, torch.optim.SGD):
            return all(g["momentum"] == 0 for g in optimizer.param_groups) or all(
                "momentum_buffer" in optimizer.state.get(p, {}) for p in params)
        return all("step" in optimizer.state.get(p, {}) for p in params)

    def __call__(self, learning_rate: float) -> None:
        """One update of every parameter from its ``.grad`` at ``learning_rate``."""
        with torch.no_grad():  # as torch.optim's step (not differentiable)
            for group, lists in self.groups:
                params = group["params"]
                grads = [p.grad for p in params]
                if self.sgd:
                    sgd(params, grads, *lists, weight_decay=group["weight_decay"], momentum=group["momentum"],
                        lr=learning_rate, dampening=group["dampening"], nesterov=group["nesterov"],
                        maximize=group["maximize"], foreach=group["foreach"], fused=group["fused"])
                else:
                    beta1, beta2 = group["betas"]
                    adam(params, grads, *lists, amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2,
                         lr=learning_rate, weight_decay=group["weight_decay"], eps=group["eps"],
                         maximize=group["maximize"], foreach=group["foreach"], capturable=group["capturable"],
                         differentiable=group["differentiable"], fused=group["fused"],
                         decoupled_weight_decay=group["decoupled_weight_decay"])


class TorchTrainer:
    """Holds the optimizer; ``step`` runs one batch in train mode."""

    def __init__(self, model: TorchModel, train: TrainConfig, decay_names: set[str]) -> None:
        self.model = model
        self.optimizer = _optimizer(model, train, decay_names)
        torch.manual_seed(train.seed)  # dropout masks come from torch's global generator: make them repeatable
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._update: _Update | None = None  # after the first step, which makes the optimizer's state
        self.direct_update = True  # False: every update through optimizer.step() (the loop until 2026-12-05)
        model.rng_taken = None  # the generator was just reseeded
        # (layer index, p, per-sample shape) of each Dropout that draws: p 0 and 1 draw nothing (aten's _dropout_impl).
        # Only the harness's own GraphNet takes noise drawn beforehand; a user's module (harness port) draws its own.
        self._dropouts = [(index, layer.p, shape) for index, layer, shape in model.spec.dropouts()
                          if 0 < layer.p < 1] if isinstance(model.module, GraphNet) else []
        self.noise_ahead = True  # False: Dropout draws its noise inside the forward, as until 2026-12-05
        self._names = {p: name for name in model.spec.trainable_names()
                       for key, p in model.module.named_parameters() if key == torch_name(name)}

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        """One optimizer step; returns the batch's mean cross-entropy."""
        return self.step_prepared(self.preparer()(x, y), learning_rate)

    def prepare_ahead(self) -> bool:
        """Whether making the next batch on another thread gains: only where PyTorch's own threads leave a core
        free (or compute elsewhere). Its OpenMP threads wait at every parallel region for the slowest, so a
        thread beside them on their cores costs more than it hides: LeNet5 at batch 64, two threads on two cores,
        3.89 ms a step made ahead against 3.75 made in line (bare loop 3.75)."""
        # ``.type``: a torch.device never equals the string "cpu", so comparing the device itself said "elsewhere"
        # for every CPU model.
        return self.model.device.type != "cpu" or torch.get_num_threads() < cores()

    def prepared_bytes(self, batch_size: int) -> int:
        """Bytes of Dropout noise ``preparer()`` draws for a batch of ``batch_size``."""
        if self.preparer() is _as_batch:
            return 0
        return sum(4 * batch_size * math.prod(shape) for _, _, shape in self._dropouts)  # float32

    def preparer(self) -> Callable[[np.ndarray, np.ndarray], Batch]:
        """What turns a host batch into this trainer's inputs, safe to call on another thread while a step runs
        (the loop prepares the next batch there): CPU tensors sharing the arrays' memory and, on a CPU, each
        Dropout's noise, drawn here as the layer would draw it in the forward.

        torch draws that noise on one thread whatever its thread count: 3.4 ms a step for simple-cnn at batch 64.
        ``noise.dropout_noise`` draws the same bits in C in a tenth of that, so the noise is drawn here wherever
        that extension is ready. Without it, only where PyTorch's threads leave a core free to draw on: drawn here
        in line with torch's own draw, it only moved out of cache before its use (harness/bare 0.991 and 0.997,
        against 1.009 and 1.010 drawn in the forward, simple-cnn at batch 64 on both cores)."""
        if (self.noise_ahead and self._dropouts and self.model.device.type == "cpu"
                and (native_draw_ready() or self.prepare_ahead())):
            return self._with_noise
        return _as_batch

    def _with_noise(self, x: np.ndarray, y: np.ndarray) -> Batch:
        # In layer order, the order the forward would draw in; nothing else draws from torch's generator in a step.
        noise = {index: dropout_noise(p, (len(x), *shape)) for index, p, shape in self._dropouts}
        return Batch(torch.from_numpy(x), torch.from_numpy(y), noise, torch.get_rng_state())

    def step_prepared(self, prepared: Batch, learning_rate: float) -> float:
        """``step`` on a batch made by ``preparer()``; returns the batch's mean cross-entropy."""
        module, device = self.model.module, self.model.device
        if not module.training:  # predict() and export leave the whole module in eval mode; train() walks every
            module.train()       # submodule (~45 us for LeNet5), so only when needed
        inputs, targets, noise, rng_after = prepared
        if device.type != "cpu":  # the copy to an accelerator stays on this thread, in the step's stream order
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        for param in self._params:  # optimizer.zero_grad(set_to_none=True) without its profiling wrapper
            param.grad = None
        logits = module(inputs) if noise is None else module.outputs(inputs, noise=noise)[-1]
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        for group in self.optimizer.param_groups:
            # A float, as torch.optim's schedulers set it: a tensor lr would take other update kernels, so other
            # rounding than the runs made so far and the float64 referee's.
            group["lr"] = learning_rate
        if self._update is not None and self.direct_update and all(p.grad is not None for p in self._params):
            self._update(learning_rate)
        else:  # the first step makes the state; a parameter without a gradient is skipped, as torch.optim does
            self.optimizer.step()
            self._update = _Update(self.optimizer) if _Update.ready(self.optimizer) else None
        if rng_after is not None:  # a checkpoint from here on resumes with the next batch's noise
            self.model.rng_taken = rng_after
        return loss.item()

    def state(self) -> dict[str, np.ndarray]:
        """Optimizer state by canonical names; empty before the first step."""
        out: dict[str, np.ndarray] = {}
        for param, slots in self.optimizer.state.items():
            name = self._names[param]
            for key in _STATE_KEYS:
                if slots.get(key) is not None:
                    out[f"{name}.{key}"] = slots[key].detach().cpu().numpy().copy()
            if "step" in slots:
                out["step"] = np.asarray(float(slots["step"]), dtype=np.float32)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()``'s output (from either backend)."""
        self._update = None  # its lists hold the tensors replaced here
        self.optimizer.state.clear()
        for param, name in self._names.items():
            slots = {key: torch.from_numpy(np.array(state[f"{name}.{key}"], dtype=np.float32)).to(param.device)
                     for key in _STATE_KEYS if f"{name}.{key}" in state}
            if "step" in state and slots:
                slots["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
            if slots:
                self.optimizer.state[param] = slots
