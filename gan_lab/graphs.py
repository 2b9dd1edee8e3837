"""Fast paths for the training iteration: one CUDA graph per iteration, and torch.compile.

A GAN step on MNIST-sized models is tiny: on a GPU most of an eager iteration is Python
and kernel-launch overhead (WGAN-GP with 5 critic steps is a few thousand operator calls).
`GraphedIteration` runs a few iterations eagerly, captures the next one whole (n_critic
critic steps with the penalty's double backward, weight clipping, the generator step and
both optimizer steps) and from then on replays it: one launch per generator step.

What makes an iteration capturable:
- the data live on the device and batches are drawn with randint + index_select, and every
  random number comes from torch's CUDA generator, which hands each replay fresh offsets,
  so a replay draws new batches, noise and interpolation weights (the same numbers, in the
  same order, as eager iterations from the same seed);
- the optimizers are `capturable` (their step counts live on the device);
- nothing reads a value back to the host: the step counter the non-finite guard records is
  a device tensor incremented inside the graph, and the loop reads the captured scalars
  only at log steps, before the next replay overwrites them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gan_lab import distributed
from gan_lab.errors import GanLabError
from gan_lab.tracker import console

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
    """Replays one captured training iteration; eager for the first `warmup` calls.

    The warm-up iterations are real training steps: they create the optimizers' state and
    let cuBLAS / cuDNN pick their kernels before capture, on a side stream as capture requires.
    If capture fails, the run goes on eagerly after one warning that says why.
    """

    def __init__(self, iteration: Callable[[int | Tensor], Result], start: int, device: torch.device,
                 warmup: int = 3):
        self.iteration, self.warmup, self.device = iteration, warmup, device
        self.step = torch.full((), start, dtype=torch.long, device=device)  # the generator step, on the device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured: Result | None = None
        self.calls, self.eager = 0, False

    def _body(self) -> Result:
        self.step.add_(1)
        return self.iteration(self.step)

    def __call__(self, step: int) -> Result:
        if self.graph is not None:
            self.graph.replay()
            assert self.captured is not None
            return self.captured
        if self.eager:
            return self.iteration(step)
        if self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        return self._capture(step)

    def _capture(self, step: int) -> Result:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                captured = self._body()
        except Exception as err:  # anything the capture cannot record: train eagerly instead
            torch.cuda.synchronize(self.device)
            warn(f"the training iteration could not be captured as a CUDA graph ({type(err).__name__}: "
                 f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no message'}), so this run "
                 f"trains eagerly: the same math, slower. Pass train.cuda_graph=false to skip the attempt.")
            self.eager = True
            return self.iteration(step)
        self.graph, self.captured = graph, captured
        graph.replay()
        return captured


def graph_blocker(skip: bool, lr_schedule: str = "constant") -> str | None:
    """Why this run cannot use a CUDA graph, or None when it can."""
    if lr_schedule != "constant":
        return (f"train.lr_schedule={lr_schedule} changes the learning rates on the host every step, and the "
                f"captured optimizer steps would keep the first one")
    if skip:
        return ("train.nonfinite=skip decides on the host, before every update, whether to apply it, "
                "and a graph cannot wait for that answer")
    if distributed.world_size() > 1:
        return "under torchrun the DDP gradient all-reduce runs outside CUDA graphs in gan-lab"
    return None


def runner(iteration: Any, mode: str | bool, device: torch.device, start: int,
           skip: bool, lr_schedule: str = "constant") -> Callable[[int], Result]:
    """The callable the loop runs once per generator step: `iteration` itself, or its CUDA graph."""
    use = device.type == "cuda" and mode in ("auto", True)
    if mode is True and device.type != "cuda":
        raise GanLabError(f"train.cuda_graph=true needs the run on a CUDA device, and it is on {device}. "
                          f"Use train.cuda_graph=auto (on whenever the run is on CUDA) or false.")
    blocker = graph_blocker(skip, lr_schedule) if use else None
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
    (WGAN-GP, R1) stays eager; the generator, and a critic without a penalty, are compiled
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

    def __call__(self, step: int | Tensor) -> Result:
        if self.checked:
            return self.iteration(step)
        try:
            out = self.iteration(step)
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
