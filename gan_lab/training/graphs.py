"""Fast paths for the training iteration: one CUDA graph per iteration, and torch.compile.

A GAN step on MNIST-sized models is tiny: on a GPU most of an eager iteration is Python
and kernel-launch overhead (WGAN-GP with 5 critic steps is a few thousand operator calls).
`GraphedIteration` runs a few iterations eagerly, captures the next one whole (n_critic
critic steps with the penalty's double backward, weight clipping, the generator step and
both optimizer steps) and from then on replays it: one launch per generator step.

What makes an iteration capturable (the contract the data set's sample() and the models keep is
written once, in gan_lab.capture, where they declare it; runner() reads their declarations):
- the data live on the device and batches are drawn with randint + index_select, and every
  random number comes from torch's CUDA generator, which hands each replay fresh offsets,
  so a replay draws new batches, noise and interpolation weights (the same numbers, in the
  same order, as eager iterations from the same seed);
- the optimizers are `capturable` (their step counts live on the device);
- nothing reads a value back to the host: the step counter the non-finite guard records is
  a device tensor incremented inside the graph, and the loop reads the captured scalars
  only at log steps, before the next replay overwrites them.

Learning-rate schedules (gan_lab.training.schedules) are part of the captured iteration. A graph
replays kernels with the arguments they were recorded with, so an lr passed as a Python
float would stay the first step's forever. Under a schedule the learning rates are therefore
tensors on the device (float32), and the iteration's first act is to write them in place
from the step: `lr.copy_(configured * factor(step))`, with `step` the graph's own counter,
incremented inside the graph. The optimizer steps read the lr from device memory: the fused
Adam / AdamW / SGD kernels take a pointer to it, and capturable Adam, AdamW and (on its
foreach path) RMSprop multiply by it with tensor ops. The eager loop runs the very same code
with the step as an int (float64 lr tensors on the CPU, which train bitwise as float lrs did).
An optimizer that would read a tensor lr back to the host (unfused SGD: `alpha=-lr`) cannot be
captured under a schedule; graph_blocker names it and the run trains eagerly. A constant lr
stays a float: nothing changes it, so the graph may keep it. Anything else that varies with the
step (a generator EMA's decay and ramp-up, a penalty applied every k steps) fits the same way:
a tensor computed from the step inside the iteration, never a Python value chosen on the host.
The generator EMA (gan_lab.training.ema, train.ema_kimg) is one: after the generator step the iteration
computes beta (with its ramp-up) from the step tensor and averages with `_foreach_lerp_` and that
tensor weight, so each replay applies its own step's decay.

Lazy regularisation (`loss.reg_every=k`, StyleGAN2) is the exception, on purpose: its point is
to skip the penalty's double backward on k - 1 critic steps in k, and a weight of 0 on the
device would still pay for it. Which critic steps of an iteration add the penalties (its
*phase*, `Iteration.phase(step)`) is a function of the host's step number, and takes few
values (two when n_critic is 1), so `GraphedIteration` captures one graph per phase, each
after an eager warm-up of that phase, and replays the one the step needs. Each graph has its
own memory pool: they replay in any order. The penalties' last values, which a step that skips
them reports, live in tensors that the regularising graph writes in place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gan_lab import capture
from gan_lab.errors import GanLabError
from gan_lab.runs.tracker import console
from gan_lab.training import distributed

Result = tuple[dict[str, Tensor], tuple[Tensor, Tensor | None, Tensor]]


def warn(message: str) -> None:
    console.print(f"[bold yellow]gan-lab: warning:[/] {message}", soft_wrap=True, highlight=False)


def set_capturable(opt: torch.optim.Optimizer, on: bool) -> None:
    """Make an optimizer graph-safe (step counts on the device) or back (on the host).

    Called after a checkpoint is loaded too: an optimizer state saved by a graphed run
    resumes eagerly, on another device, and the other way round.
    """
    if "capturable" not in opt.defaults:
        return  # e.g. SGD: no step count to move; capture takes it as it is
    for group in opt.param_groups:
        group["capturable"] = on
        for param in group["params"]:
            step = opt.state.get(param, {}).get("step")
            if isinstance(step, Tensor):  # fused optimizers keep it on the device either way
                state_device = param.device if on or group.get("fused") else torch.device("cpu")
                opt.state[param]["step"] = step.to(state_device, torch.float32)


class GraphedIteration:
    """Replays a captured training iteration, one graph per phase; eager for the first `warmup` calls.

    The warm-up iterations are real training steps: they create the optimizers' state and
    let cuBLAS / cuDNN pick their kernels before capture, on a side stream as capture requires.
    A phase (which critic steps add the penalties, see the module's docstring) seen for the first
    time after the warm-up is run eagerly once more, then captured when it comes again.
    If capture fails, the run goes on eagerly after one warning that says why.
    """

    def __init__(self, iteration: Any, start: int, device: torch.device, warmup: int = 3):
        self.iteration, self.warmup, self.device = iteration, warmup, device
        self.step = torch.full((), start, dtype=torch.long, device=device)  # the generator step, on the device
        self.graphs: dict[Any, tuple[torch.cuda.CUDAGraph, Result]] = {}  # phase -> its graph and outputs
        self.warmed: set[Any] = set()
        self.calls, self.eager = 0, False

    @property
    def graph(self) -> torch.cuda.CUDAGraph | None:
        """The first captured graph (None before capture): most runs have only this one."""
        return next(iter(self.graphs.values()))[0] if self.graphs else None

    def _body(self, phase: Any) -> Result:
        self.step.add_(1)
        return self.iteration(self.step, phase)

    def __call__(self, step: int) -> Result:
        phase = self.iteration.phase(step)
        if phase in self.graphs:
            graph, captured = self.graphs[phase]
            graph.replay()
            return captured
        if self.eager:
            return self.iteration(step, phase)
        if self.calls < self.warmup or phase not in self.warmed:
            self.calls += 1
            self.warmed.add(phase)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._body(phase)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        return self._capture(step, phase)

    def _capture(self, step: int, phase: Any) -> Result:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # a private memory pool per graph: phases replay in any order
                captured = self._body(phase)
        except Exception as err:  # anything the capture cannot record: train eagerly instead
            torch.cuda.synchronize(self.device)
            warn(f"the training iteration could not be captured as a CUDA graph ({type(err).__name__}: "
                 f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no message'}), so this run "
                 f"trains eagerly: the same math, slower. Pass train.cuda_graph=false to skip the attempt.")
            self.eager = True
            return self.iteration(step, phase)
        self.graphs[phase] = (graph, captured)
        graph.replay()
        return captured


def reads_lr_on_device(opt: torch.optim.Optimizer) -> bool:
    """Whether a (capturable) optimizer's step reads a tensor lr in device memory, never on the host."""
    for group in opt.param_groups:
        if group.get("fused"):
            continue  # the fused kernels take a pointer to the lr
        if "capturable" not in opt.defaults:
            return False  # e.g. unfused SGD: param.add_(grad, alpha=-lr) reads the lr on the host
        if not isinstance(opt, torch.optim.Adam) and group.get("foreach") is False:
            return False  # RMSprop's single-tensor path: addcdiv_(value=-lr) reads it on the host
    return True


def graph_blocker(skip: bool, lr_schedule: str = "constant",
                  optimizers: tuple[torch.optim.Optimizer, ...] = (), topk: bool = False,
                  parts: dict[str, Any] | None = None) -> str | None:
    """Why this run cannot use a CUDA graph, or None when it can.

    parts: what runs inside the iteration by role (data, generator, critic), each declaring whether it
    keeps the graph's contract (gan_lab.capture).
    """
    declared = capture.not_capturable(**(parts or {}))
    if declared:
        return declared
    if topk:
        return ("train.topk keeps a number of fakes that changes with the step, a shape a captured graph "
                "cannot vary")
    if lr_schedule != "constant":
        for opt in optimizers:
            if not reads_lr_on_device(opt):
                name = type(opt).__name__
                fix = ("add +optimizer.fused=true: fused SGD reads it on the device" if isinstance(opt, torch.optim.SGD)
                       else "use Adam, AdamW, or RMSprop on its default foreach path")
                return (f"train.lr_schedule={lr_schedule} with optimizer {name}: this {name} reads its learning "
                        f"rate on the host, so the captured steps would keep the first one ({fix})")
    if skip:
        return ("train.nonfinite=skip decides on the host, before every update, whether to apply it, "
                "and a graph cannot wait for that answer")
    if distributed.world_size() > 1:
        return "under torchrun the DDP gradient all-reduce runs outside CUDA graphs in gan-lab"
    return None


def runner(iteration: Any, mode: str | bool, device: torch.device, start: int,
           skip: bool, lr_schedule: str = "constant", topk: bool = False,
           parts: dict[str, Any] | None = None) -> Callable[[int], Result]:
    """The callable the loop runs once per generator step: `iteration` itself, or its CUDA graph.

    parts: the data set and the models by role, whose `capturable` declarations graph_blocker reads.
    """
    use = device.type == "cuda" and mode in ("auto", True)
    if mode is True and device.type != "cuda":
        raise GanLabError(f"train.cuda_graph=true needs the run on a CUDA device, and it is on {device}. "
                          f"Use train.cuda_graph=auto (on whenever the run is on CUDA) or false.")
    blocker = graph_blocker(skip, lr_schedule, (iteration.opt_g, iteration.opt_d), topk, parts) if use else None
    if blocker:
        warn(f"no CUDA graph for this run: {blocker}. It trains eagerly (the same math, slower).")
        use = False
    for opt in (iteration.opt_g, iteration.opt_d):
        set_capturable(opt, use)
    if not use:
        return iteration
    console.print("[bold]CUDA graph[/] the whole iteration is captured after 3 eager warm-up steps, then replayed")
    return GraphedIteration(iteration, start, device)


class CompiledIteration:
    """An iteration whose networks run through torch.compile, checked to have really compiled.

    torch.compile cannot trace a double backward, so a critic trained with a gradient penalty
    (WGAN-GP, R1, R2, DRAGAN) stays eager; the generator, and a critic without a penalty, are compiled
    whole (fullgraph=True: a graph break is an error, not a silent fallback to Python).
    """

    def __init__(self, iteration: Any, backend: str, penalised: bool):
        self.iteration, self.backend = iteration, backend
        if distributed.world_size() > 1:
            raise GanLabError("train.compile is not supported under torchrun yet: compile and DDP's bucketing "
                              "need care gan-lab does not take. Drop train.compile, or train on one GPU.")
        self.compiled: dict[str, nn.Module] = {"generator": iteration.G}
        if not penalised:
            self.compiled["critic"] = iteration.critic
        self.graphs = Counter[str]()
        for name, module in self.compiled.items():
            fn = torch.compile(module, backend=self._counting(name), fullgraph=True)
            if name == "generator":
                iteration.G = iteration.G_frozen = fn
            else:
                iteration.critic = iteration.critic_frozen = fn
        self.opt_g, self.opt_d = iteration.opt_g, iteration.opt_d
        self.checked = False

    def _counting(self, name: str) -> Callable[..., Any]:
        # the named backend, counting the graphs it is handed: proof that compilation happened
        from torch._dynamo import lookup_backend

        try:
            inner = lookup_backend(self.backend)
        except Exception as err:
            raise GanLabError(f"train.compile={self.backend!r} is not a torch.compile backend ({err}). Use true "
                              f"(inductor) or one of {', '.join(torch._dynamo.list_backends())}.") from None

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., Any]:
            self.graphs[name] += 1
            return inner(gm, example_inputs)
        return backend

    def phase(self, step: int) -> Any:
        """The wrapped iteration's phase of `step` (see Iteration.phase)."""
        return self.iteration.phase(step)

    def __call__(self, step: int | Tensor, phase: Any = None) -> Result:
        if self.checked:
            return self.iteration(step, phase)
        try:
            out = self.iteration(step, phase)
        except Exception as err:
            if not type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            raise GanLabError(f"train.compile={self.backend} failed to compile the networks "
                              f"({type(err).__name__}: {str(err).strip().splitlines()[0]}). Train without it "
                              f"(train.compile=false) or try another backend.") from None
        missing = [name for name in self.compiled if not self.graphs[name]]
        if missing:
            raise GanLabError(f"train.compile={self.backend} compiled no graph for the {', '.join(missing)}: the "
                              f"run would silently be eager. Train without train.compile.")
        console.print(f"[bold]compiled[/] {', '.join(f'{n} ({self.graphs[n]} graphs)' for n in self.compiled)} "
                      f"with {self.backend}" + ("" if "critic" in self.compiled else
                                                "; the critic stays eager (the penalty's double backward)"))
        self.checked = True
        return out


def compiled(iteration: Any, setting: str | bool, penalised: bool) -> CompiledIteration:
    """`iteration` with its networks compiled by torch.compile (train.compile=true or a backend name)."""
    return CompiledIteration(iteration, "inductor" if setting is True else str(setting), penalised)
