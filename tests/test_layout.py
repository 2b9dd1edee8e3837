"""The house's layers, read from the source (ast, nothing imported): no import circle, app on top."""

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


def test_the_job_lifecycle_has_its_own_module() -> None:
    # cli.py composes and builds; the run folder, status, resume policy, signals and summary are the job's
    defined = {name: {node.name for node in ast.parse(file.read_text()).body
                      if isinstance(node, (ast.FunctionDef, ast.ClassDef))} for name, file in modules().items()}
    lifecycle = {"run_job", "load_resume", "summary_table", "print_outputs"}
    assert lifecycle <= defined["gan_lab.app.job"]
    assert not lifecycle & defined["gan_lab.app.cli"]
    assert "choose_device" in defined["gan_lab.training.distributed"]
