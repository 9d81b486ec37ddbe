"""The training loop's inner step, shared by every task: one `step()` is one Create ML iteration.

An iteration is one pass over the training set, in mini-batches of `batch_size` (AdamW). (The image
classifier's logistic regressor has its own L-BFGS trainer: nets/logistic.py.) The state — network, optimizer and random
generator — round-trips through `torch.load(weights_only=True)`.

Every random draw of a run (initial weights, batch order, augmentation, dropout) comes from the trainer's
own generator, never torch's global one: the same seed trains the same network, and a run resumed from a
checkpoint (which holds the generator's state) equals an uninterrupted one exactly.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..tasks.hand_action_classifier import WindowData

# Batches a dataset yields: (inputs, integer labels).
Batch = tuple[torch.Tensor, torch.Tensor]


class TensorData:
    """Fixed inputs (N, ...) with labels (N,), optionally augmented per batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        self.x, self.y, self.augment = x, y, augment

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> Batch:
        """The examples at `idx`, augmented with `generator` when an augmentation is set."""
        x = self.x[idx]
        if self.augment is not None:
            x = self.augment(x, generator)
        return x, self.y[idx]

    def all(self) -> Batch:
        """Every example, unaugmented (for the loss and accuracy reports)."""
        return self.x, self.y


class AdamW:
    """torch.optim.AdamW's algorithm (defaults: betas 0.9/0.999, eps 1e-8, no amsgrad), state dicts in its format.

    Its own because constructing any torch.optim optimizer imports torch._dynamo on first use (about
    1 s): a fresh process (the command line, a dashboard kernel) would pay that before every first
    training, longer than training a hand pose model takes.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        self.params = list(params)
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                              "amsgrad": False, "maximize": False, "params": list(range(len(self.params)))}]
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Forget the gradients of the last step."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW update of every parameter with a gradient (torch.optim.AdamW's algorithm)."""
        group = self.param_groups[0]
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                      "exp_avg_sq": torch.zeros_like(p)}
            st["step"] += 1
            step = float(st["step"])
            p.mul_(1 - lr * wd)
            st["exp_avg"].lerp_(p.grad, 1 - beta1)
            st["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (st["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)
            p.addcdiv_(st["exp_avg"], denom, value=-lr / (1 - beta1 ** step))

    def state_dict(self) -> dict:
        """The state in torch.optim.AdamW's format (it round-trips through torch.load(weights_only=True))."""
        return {"state": {i: {k: v.clone() for k, v in st.items()} for i, st in self.state.items()},
                "param_groups": [dict(g, params=list(g["params"])) for g in self.param_groups]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` (or from torch.optim.AdamW's)."""
        saved = state["param_groups"][0]
        self.param_groups[0].update({k: saved[k] for k in ("lr", "eps", "weight_decay") if k in saved})
        if "betas" in saved:
            self.param_groups[0]["betas"] = tuple(saved["betas"])
        self.state = {int(i): {"step": torch.as_tensor(st["step"], dtype=torch.float32).clone(),
                               "exp_avg": st["exp_avg"].clone(), "exp_avg_sq": st["exp_avg_sq"].clone()}
                      for i, st in state["state"].items()}


class GeneratorDropout(nn.Dropout):
    """nn.Dropout drawing its masks from a given torch.Generator (nn.Dropout draws from the global one)."""

    def __init__(self, p: float, generator: torch.Generator, inplace: bool = False):
        super().__init__(p, inplace)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with the dropped elements zeroed and the rest scaled by 1 / (1 - p) while training; `x` otherwise."""
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self.generator)
        return x * mask / keep


_INITIALISED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def seed_network(net: nn.Module, generator: torch.Generator) -> None:
    """Draw `net`'s initial weights from `generator` (PyTorch's default initialisation of linear and
    convolution layers) and make its dropout layers draw from it too."""
    for m in net.modules():
        if isinstance(m, _INITIALISED):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    for parent in net.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, GeneratorDropout(child.p, generator, child.inplace))
            elif isinstance(child, GeneratorDropout):
                child.generator = generator


# Trainer(threads=AUTO): as many threads as there are cores not busy with other work, counted once
# (`idle_cores`) when the trainer is made; `Trainer.threads` then holds that count.
AUTO = "auto"


def _other_runnable(loadavg: str, own_running: int = 1) -> int:
    """Runnable tasks of other processes, from the text of /proc/loadavg ("0.1 0.2 0.3 R/T PID") less
    this process's own running threads (at least the reading one)."""
    return max(0, int(loadavg.split()[3].split("/")[0]) - max(1, own_running))


def _own_running_threads() -> int:
    """This process's threads in state R now (/proc/self/task/*/stat), at least 1 (the caller)."""
    n = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:  # pragma: no cover - not Linux
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        n += state == "R"
    return max(1, n)


def usable_cores() -> int:
    """CPUs this process may run on: its affinity, within a cgroup CPU quota (docker --cpus, Kubernetes
    limits: /sys/fs/cgroup/cpu.max) where one is set."""
    from ..features.fast_inference import cpu_threads  # the affinity count ONNX Runtime's threads use

    cores = cpu_threads()
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def idle_cores(samples: int = 3, interval: float = 0.005) -> int:
    """The usable CPUs less those other processes' runnable tasks occupy now, at least 1.

    Read from /proc/loadavg's count of runnable tasks (instantaneous, unlike the load averages, which
    lag a minute behind) less this process's own running threads, the least of `samples` reads
    `interval` s apart so a passing task does not count. Torch threads asked for on cores that other
    processes hold spin and wait on each other: the hand action trainer ran 8-20x slower on two threads
    than on one on a 2-core machine at load 15-20. Where /proc/loadavg is missing (not Linux), every
    usable CPU counts as idle. The runnable count is machine-wide: in a container pinned to some of its
    host's CPUs it errs towards fewer threads.
    """
    cores = usable_cores()
    others = None
    for i in range(max(1, samples)):
        try:
            with open("/proc/loadavg") as f:
                n = _other_runnable(f.read(), _own_running_threads())
        except (OSError, IndexError, ValueError):  # pragma: no cover - not Linux
            return cores
        others = n if others is None else min(others, n)
        if i + 1 < samples:
            time.sleep(interval)
    return max(1, cores - (others or 0))


class Trainer:
    """Trains `net` on `train` and reports loss/accuracy on `train` and `validation`."""

    def __init__(self, net: nn.Module, train: TensorData | WindowData, validation: TensorData | WindowData | None = None,
                 *, batch_size: int = 32,
                 optimizer: str = "adam", learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 seed: int = 0, class_weights: torch.Tensor | None = None, threads: int | str | None = 1):
        self.net, self.train_data, self.validation = net, train, validation
        # Small networks train fastest on one thread: more threads only add synchronisation (figures in
        # benchmarks/README.md, "Threads of the small trainers"). None: torch's own count; AUTO: the
        # cores idle now (`idle_cores`), counted once: torch's results depend on its thread count, so a
        # count that changed from step to step would make the same seed train a different network.
        if not (threads is None or threads == AUTO or (isinstance(threads, int) and threads >= 1)):
            raise ValueError(f"threads={threads!r}: give a count >= 1, None (torch's own) or {AUTO!r}")
        self.threads = idle_cores() if threads == AUTO else threads
        self.batch_size = max(1, int(batch_size))
        self.class_weights = class_weights
        self.generator = torch.Generator().manual_seed(seed)
        seed_network(net, self.generator)  # initial weights and dropout from the trainer's own generator
        self._fit_batch_norm_momentum()
        if optimizer != "adam":
            raise ValueError(f"unknown optimizer {optimizer!r}: the training loop trains with 'adam' (AdamW)")
        self.optimizer = AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)

    def _fit_batch_norm_momentum(self) -> None:
        """Let batch norm's running statistics keep up on small data sets.

        With the default momentum (0.1) they move a tenth of the way per batch: a data set of one or two
        batches trained for a few iterations is then evaluated with statistics still near their
        initial values, and the trained network looks far worse in eval mode than it trained. A
        momentum of at least one over the batches per iteration makes each iteration count fully.
        """
        batches = max(1, -(-len(self.train_data) // self.batch_size))
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None:
                m.momentum = max(m.momentum, 1.0 / batches)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weights)

    @contextlib.contextmanager
    def _on_threads(self):
        """Run torch on this trainer's thread count for the block (torch's own when it is None)."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def step(self) -> dict[str, float]:
        """One Create ML iteration: a pass over the training set; returns its loss and accuracy."""
        with self._on_threads():
            return self._step()

    def _step(self) -> dict[str, float]:
        self.net.train()
        n = len(self.train_data)
        order = torch.randperm(n, generator=self.generator)
        total_loss, correct = 0.0, 0
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if len(idx) < 2 and n >= 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.net.modules()):
                continue  # batch norm cannot train on a single example
            x, y = self.train_data.batch(idx, self.generator)
            self.optimizer.zero_grad()
            logits = self.net(x)
            loss = self._loss(logits, y)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        return {"loss": total_loss / max(n, 1), "accuracy": correct / max(n, 1)}

    @torch.inference_mode()
    def _metrics_on(self, data, prefix: str) -> dict[str, float]:
        self.net.eval()
        x, y = data.all()
        with self._on_threads():
            logits = self.net(x)
        return {f"{prefix}loss": float(F.cross_entropy(logits, y)),
                f"{prefix}accuracy": float((logits.argmax(1) == y).float().mean())}

    def validation_metrics(self) -> dict[str, float]:
        """Loss and accuracy on the validation set ({} without one)."""
        if self.validation is None or len(self.validation) == 0:
            return {}
        return self._metrics_on(self.validation, prefix="validation_")

    def state_dict(self) -> dict:
        """Network, optimiser and random generator: what a checkpoint holds."""
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
