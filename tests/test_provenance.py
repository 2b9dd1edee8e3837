"""Every figure traceable to its code: the commit in status.json / eval.json, and docs only from a clean tree."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, TINY_MLP, run_cli
from gan_lab.runs import provenance

REPO = Path(__file__).resolve().parent.parent


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                           capture_output=True, text=True, check=True).stdout.strip()


def generated_doc(monkeypatch: pytest.MonkeyPatch, repo: Path):
    """scripts/generated_doc.py, loaded as a module, pointed at repo."""
    spec = importlib.util.spec_from_file_location("generated_doc", REPO / "scripts" / "generated_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "REPO", repo)
    return module


def test_run_and_eval_record_the_code_they_ran(tmp_path: Path) -> None:
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    run_cli("eval", f"checkpoint={tmp_path}")
    trained = json.loads((tmp_path / "status.json").read_text())["code"]
    evaluated = json.loads((tmp_path / "eval.json").read_text())["code"]
    assert trained == evaluated == provenance.code_version()
    assert trained["gan_lab"] and trained["torch"] == torch.__version__  # its kernels set the last digits
    if (REPO / ".git").exists() and provenance.SOURCE == REPO:  # a checkout: the commit it is at
        assert trained["commit"] == git(REPO, "rev-parse", "HEAD")
        assert trained["dirty"] == bool(git(REPO, "status", "--porcelain"))


def test_a_venv_inside_another_checkout_does_not_borrow_its_commit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "project"
    (other / "site-packages" / "gan_lab").mkdir(parents=True)
    git(other, "init", "-q")
    monkeypatch.setattr(provenance, "SOURCE", other / "site-packages")
    provenance.code_version.cache_clear()
    try:
        assert "commit" not in provenance.code_version()
    finally:
        provenance.code_version.cache_clear()


def test_docs_are_written_from_a_clean_commit_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1\n")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    doc = generated_doc(monkeypatch, tmp_path)
    assert doc.source_state(allow_dirty=False) == (head, False)
    assert doc.made_at(head, False) == f"commit {head[:7]}"

    (tmp_path / "a.txt").write_text("2\n")
    with pytest.raises(SystemExit) as refused:
        doc.source_state(allow_dirty=False)
    assert "uncommitted changes" in str(refused.value) and "--allow-dirty" in str(refused.value)
    assert doc.source_state(allow_dirty=True) == (head, True)
    assert "with uncommitted changes" in doc.made_at(head, True)


def test_toy_results_refuses_a_dirty_tree_before_training(tmp_path: Path) -> None:
    # a copy of the scripts in a repository with an uncommitted change: the script must stop before any run
    import shutil

    (tmp_path / "scripts").mkdir()
    for name in ("toy_results.py", "generated_doc.py"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "scripts")
    git(tmp_path, "commit", "-q", "-m", "scripts")
    (tmp_path / "scripts" / "toy_results.py").write_text((tmp_path / "scripts" / "toy_results.py").read_text() + "\n")
    out = subprocess.run([sys.executable, str(tmp_path / "scripts" / "toy_results.py"), "--out",
                          str(tmp_path / "r.md"), "--root", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0 and "uncommitted changes" in out.stderr
    assert not (tmp_path / "r.md").exists() and not (tmp_path / "runs").exists()
