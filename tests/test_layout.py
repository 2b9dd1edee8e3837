"""The house's layers, read from the source (ast, nothing imported): no import circle, app on top.

The layer rule (top first): a module imports only modules of its own layer or of the layers below.

    app          gan_lab.app.*, gan_lab.__main__, gan_lab.sweeps
    training     gan_lab.training.*      } side by side: neither imports the other
    evaluation   gan_lab.evaluation.*    }
    runs         gan_lab.runs.*
    bottom       what conf/ names and what it needs: losses, models, resnets, data, folder,
                 image_cache, augment, optimizers, errors, capture (the CUDA-graph contract they
                 declare), measures (what data sets declare; the evaluation layer hands its tools
                 down in the EvalContext), torchvision_sets, table, table_columns, table_transform,
                 table_condition, table_data, tables_model

sweeps.py sits with app/: it is the sweep's side of `gan-lab train` (the SweepSummary callback
conf/train.yaml names, threads per job, the objective), imports runs/ and is imported by app/
alone; it stays at the top level only so that every config and checkpoint that names
`gan_lab.sweeps.SweepSummary` keeps building. State crosses layers as arguments or files, never
as a module global that another module assigns.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gan_lab"


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every gan_lab module by its dotted name (conf/ holds YAML only)."""
    return {module_name(f): f for f in sorted(PACKAGE.rglob("*.py")) if "conf" not in f.relative_to(PACKAGE).parts}


def imports(file: Path, known: set[str]) -> set[str]:
    """The gan_lab modules a file imports, at module level or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from gan_lab.runs import rundirs` imports the module gan_lab.runs.rundirs
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    known = set(modules())
    # a package's __init__ runs before any of its modules: `import gan_lab.runs.tracker` imports gan_lab.runs
    return {name: imports(file, known) - {name} for name, file in modules().items()}


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "gan_lab.runs.checkpoint" in edges["gan_lab.training.resume"]  # module level
    assert "gan_lab.evaluation.evaluate" in edges["gan_lab.app.cli"]  # inside run_training
    assert "gan_lab.training.distributed" in edges["gan_lab.app.cli"]  # `from gan_lab.training import distributed`


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, str] = {}  # grey: on the current path; black: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "grey"
        path.append(name)
        for after in sorted(edges[name]):
            if state.get(after) == "grey":
                circle = path[path.index(after):] + [after]
                raise AssertionError(f"import circle: {' -> '.join(circle)}")
            if after not in state:
                visit(after)
        path.pop()
        state[name] = "black"

    for name in sorted(edges):
        if name not in state:
            visit(name)


def test_lower_layers_never_import_the_app() -> None:
    on_top = ("gan_lab.app", "gan_lab.__main__")
    offenders = {name: sorted(after for after in targets if after.startswith("gan_lab.app"))
                 for name, targets in graph().items() if not name.startswith(on_top)}
    assert {name: after for name, after in offenders.items() if after} == {}


LAYERS = {  # the rank of each layer: higher imports lower, never the reverse
    "app": 3, "training": 2, "evaluation": 2, "runs": 1, "bottom": 0,
}
BOTTOM = {"gan_lab", "gan_lab.losses", "gan_lab.models", "gan_lab.resnets", "gan_lab.data", "gan_lab.folder",
          "gan_lab.image_cache", "gan_lab.augment", "gan_lab.optimizers", "gan_lab.errors", "gan_lab.capture",
          "gan_lab.table", "gan_lab.table_columns", "gan_lab.table_transform", "gan_lab.table_condition",
          "gan_lab.table_data", "gan_lab.tables_model", "gan_lab.measures", "gan_lab.torchvision_sets"}


def layer(name: str) -> str:
    """The layer a gan_lab module belongs to; a module no layer names fails the test that walks them all."""
    if name in ("gan_lab.__main__", "gan_lab.sweeps") or name.startswith("gan_lab.app"):
        return "app"
    for package in ("training", "evaluation", "runs"):
        if name == f"gan_lab.{package}" or name.startswith(f"gan_lab.{package}."):
            return package
    if name in BOTTOM:
        return "bottom"
    raise AssertionError(f"{name} is in no layer: add it to tests/test_layout.py's rule (and docs/architecture.md)")


def test_every_module_is_in_a_layer_and_imports_none_above_it() -> None:
    upward = {name: sorted(after for after in targets if LAYERS[layer(after)] > LAYERS[layer(name)])
              for name, targets in graph().items()}
    assert {name: after for name, after in upward.items() if after} == {}


def test_training_and_evaluation_do_not_import_each_other() -> None:
    crossing = {name: sorted(after for after in targets if {layer(name), layer(after)} == {"training", "evaluation"})
                for name, targets in graph().items()}
    assert {name: after for name, after in crossing.items() if after} == {}


def assigned_globals(file: Path, known: set[str]) -> list[str]:
    """`module.name = ...` (or +=) on a gan_lab module this file imported: another module's global, set here."""
    tree = ast.parse(file.read_text(), str(file))
    aliases: dict[str, str] = {}  # local name -> the gan_lab module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                            for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and aliases.get(target.value.id) in known):
                found.append(f"{aliases[target.value.id]}.{target.attr} (line {node.lineno})")
    return found


def test_no_module_assigns_another_modules_global() -> None:
    # state passed between layers through a module global (sweeps.last_sweep, runlog.current once) is
    # invisible at the call: pass it as an argument, or leave it in a file the run already writes
    known = set(modules())
    assert {name: found for name, file in modules().items() if (found := assigned_globals(file, known))} == {}


def test_the_rule_reads_what_it_should(tmp_path: Path) -> None:
    # the checks above would pass on an empty graph: each sees the crossing it is meant to refuse
    assert layer("gan_lab.sweeps") == "app" and layer("gan_lab.runs.status") == "runs"
    assert layer("gan_lab.folder") == "bottom" and layer("gan_lab.evaluation") == "evaluation"
    crossing = tmp_path / "crossing.py"
    crossing.write_text("from gan_lab import sweeps\nimport gan_lab.runs.runlog as runlog\n\n\ndef f():\n"
                        "    sweeps.last_sweep = None\n    runlog.current += 1\n    sweeps.x.y = 2\n")
    assert assigned_globals(crossing, set(modules())) == ["gan_lab.sweeps.last_sweep (line 6)",
                                                          "gan_lab.runs.runlog.current (line 7)"]


def test_the_validity_rules_sit_beside_what_they_check() -> None:
    # the critic's rules with the models, the batch size against the data set's size with the data
    import pytest
    from conftest import build_model

    from gan_lab.data import ToyMixture, check_batch_size
    from gan_lab.errors import GanLabError
    from gan_lab.losses import Wasserstein
    from gan_lab.models import check_critic

    _, critic = build_model("mlp", (2,), critic_norm="batch")
    with pytest.raises(GanLabError, match="batch norm is refused"):
        check_critic(critic, Wasserstein(lambda_gp=10.0), batch_size=64)
    assert check_critic(critic, Wasserstein(lambda_gp=0.0), batch_size=64) == []
    _, packed = build_model("mlp", (2,), pack=2, minibatch_std=2)
    with pytest.raises(GanLabError, match="multiple of 4"):
        check_critic(packed, Wasserstein(lambda_gp=0.0), batch_size=66)
    [note] = check_critic(packed, Wasserstein(lambda_gp=10.0), batch_size=64)
    assert note.startswith("model.minibatch_std=2 couples the samples of a group")
    check_batch_size(ToyMixture("ring8", sigma=0.02), 10**6)  # generated on the fly: any size
    # data-parallel rules with the data-parallel code; optimizer presets with conf/optimizer's module
    from gan_lab.optimizers import settings
    from gan_lab.training.distributed import check_critic_norm, lr_scale

    with pytest.raises(GanLabError, match="Data-parallel training needs a critic without batch norm"):
        check_critic_norm("batch", ranks=2)
    check_critic_norm("batch", ranks=1)
    assert (lr_scale("linear", 4), lr_scale("none", 4)) == (4, 1)
    cfg, node = settings({"_target_": "torch.optim.Adam", "lr": 1e-4, "betas": [0.0, 0.9],
                          "per_network": {"critic": {"lr": 4e-4}}}, {"lr": None, "betas": [0.5, 0.9]}, "critic", 2)
    assert cfg == {"_target_": "torch.optim.Adam", "lr": 8e-4, "betas": [0.5, 0.9]}
    assert [node(k) for k in ("_target_", "lr", "betas")] == ["optimizer", "optimizer.per_network.critic",
                                                             "optimizer_critic"]


def test_the_job_lifecycle_has_its_own_module() -> None:
    # cli.py composes and builds; the run folder, status, resume policy, signals and summary are the job's
    defined = {name: {node.name for node in ast.parse(file.read_text()).body
                      if isinstance(node, (ast.FunctionDef, ast.ClassDef))} for name, file in modules().items()}
    lifecycle = {"run_job", "load_resume", "summary_table", "print_outputs"}
    assert lifecycle <= defined["gan_lab.app.job"]
    assert not lifecycle & defined["gan_lab.app.cli"]
    assert "choose_device" in defined["gan_lab.training.distributed"]
