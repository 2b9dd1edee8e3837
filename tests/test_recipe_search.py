"""scripts/recipe_search.py (docs/recipe_search.md) on tiny runs: the sweeps, the cost unit, the doc's tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from conftest import TINY, run_cli
from gan_lab.runs.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from recipe_search import CANDIDATES  # noqa: E402  (scripts/ is not a package)

def search(tmp_path: Path, *args: str) -> str:
    """Run the script into tmp_path/runs and tmp_path/search.md; its doc."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe_search.py"), "--allow-dirty", "--jobs", "1",
                           "--root", str(tmp_path / "runs"), "--out", str(tmp_path / "search.md"), *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return (tmp_path / "search.md").read_text()


def table_row(doc: str, name: str) -> list[str]:
    """The first table row of the doc whose first cell is name."""
    return next(line.split("|")[1:-1] for line in doc.splitlines() if line.startswith(f"| {name} |"))


@pytest.mark.slow  # two compositions and a training run each
@pytest.mark.parametrize(("experiment", "candidate", "lr", "reg_every", "steps"),
                         [("grid25_deep", "d4w256_4k", 2e-3, 1, 4000),
                          ("grid25_recipe", "deep_lr3e3_reg4_4400", 3e-3, 4, 4400)])
def test_each_grid25_experiment_is_its_searched_candidate_in_one_override(tmp_path: Path, experiment: str,
                                                                          candidate: str, lr: float,
                                                                          reg_every: int, steps: int) -> None:
    # conf/experiment/<experiment>.yaml is the search's row <candidate>: R3GAN's loss, 4 x 256 nets
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"+experiment={experiment}"])
        searched = compose(config_name="train", overrides=["data=grid25", *CANDIDATES[candidate][0]])
        assert compose(config_name="train", overrides=[f"+experiment={experiment}", "model.depth=2"]).model.depth == 2
    assert cfg == searched
    assert (cfg.loss._target_, cfg.data.name, cfg.model.hidden, cfg.model.depth, cfg.optimizer.lr,
            cfg.train.lr_schedule, cfg.train.steps, cfg.loss.reg_every) == ("gan_lab.losses.RpGAN", "grid25", 256, 4,
                                                                           lr, "linear", steps, reg_every)
    run_cli("train", f"+experiment={experiment}", *TINY, "threads=1", "metrics=false", f"hydra.run.dir={tmp_path}")
    G = load_checkpoint(tmp_path)["G"]
    assert [tuple(v.shape) for k, v in G.items() if k.endswith("weight")] == [(256, 2), *[(256, 256)] * 3, (2, 256)]


@pytest.mark.slow
def test_the_search_sweeps_seeds_and_prices_each_candidate_against_the_default(tmp_path: Path,
                                                                             tiny_mnist_root: Path) -> None:
    tiny = ["--extra", "train.steps=20", "train.batch_size=32", "model.hidden=16"]
    doc = search(tmp_path, "--configs", "default", "sharp256", "--seeds", "0", "1", *tiny)
    # each candidate is one sweep over the seeds, its runs in <root>/<name>/seed<k>, trained as its overrides say
    config = yaml.safe_load((tmp_path / "runs" / "sharp256" / "seed1" / "config_resolved.yaml").read_text())
    assert (config["loss"]["_target_"], config["train"]["lr_schedule"], config["model"]["hidden"],
            config["train"]["steps"], config["seed"]) == ("gan_lab.losses.RpGAN", "linear", 16, 20, 1)
    default = [cell.strip() for cell in table_row(doc, "default")]
    assert default[1] == "2" and default[8] == "1.00" and default[10] == "1.00"  # the cost unit is the default
    sharp = [cell.strip() for cell in table_row(doc, "sharp256")]
    assert sharp[1] == "2" and float(sharp[8]) > 0 and float(sharp[10]) > 0
    assert "| candidate | seed 0 | seed 1 |" in doc
    record = json.loads((tmp_path / "runs" / "default" / "cpu_seconds.json").read_text())
    assert record[0]["runs"] == 2 and record[0]["cpu_seconds"] > 0
    # launched again with one more seed, the completed runs are skipped: only seed 2 trains
    doc = search(tmp_path, "--configs", "default", "--seeds", "0", "1", "2", *tiny)
    assert [h["runs"] for h in json.loads((tmp_path / "runs" / "default" / "cpu_seconds.json").read_text())] == [2, 1]
    assert table_row(doc, "default")[1].strip() == "3" and "seed 2" in doc
    # Stacked MNIST rows, beside the published ones
    doc = search(tmp_path, "--stacked", "default", "--stacked-steps", "2", "--seeds", "0", "--extra",
                 f"data.root={tiny_mnist_root}", "model.width=8", "model.z_dim=16", "train.batch_size=16")
    stacked = doc[doc.index("## Stacked MNIST"):]
    row = [cell.strip() for cell in table_row(stacked, "default")]
    assert row[1:3] == ["0", "2"] and 1 <= int(row[3]) <= 1000
    assert "PacDCGAN2 (Lin et al. 2018) | 1,000 | 0.06" in stacked
