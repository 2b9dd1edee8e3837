"""Every option of every group composes and builds; presets bring their paper's setup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

import gan_lab.data
import gan_lab.losses
from conftest import TINY, TINY_MLP, run_cli, small_model
from gan_lab.app.cli import build_loss, build_optimizer
from gan_lab.losses import Loss
from gan_lab.app.options import conf_options
from gan_lab.runs.checkpoint import load_checkpoint

options = conf_options  # the names of conf/<group>/*.yaml


def compose_train(*overrides: str):
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


def build_data(cfg, root: Path):
    node = OmegaConf.to_container(cfg.data, resolve=True)
    if "root" in node:
        node["root"], node["download"] = str(root), False
    if node["_target_"] == "gan_lab.table_data.TableData":  # data=table: a small mixed CSV
        from conftest import write_table_csv

        node["path"] = str(write_table_csv(root / "table" / "t.csv"))
    elif "path" in node:  # data=folder: a tiny folder of 32 px images
        from PIL import Image

        (root / "folder").mkdir(exist_ok=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(root / "folder" / f"{i}.png")
        node["path"], node["resolution"], node["cache"] = str(root / "folder"), 32, str(root / "folder-cache")
    return gan_lab.data.build_data(node, "cpu")


def test_groups_have_the_documented_options() -> None:
    assert set(options("loss")) >= {"hinge", "lsgan", "minimax", "nonsaturating", "wgan_clip", "wgan_gp", "rsgan",
                                    "ragan", "rpgan", "r3gan"}
    # at least the documented ones: a new option is its class, its YAML and its test, with no list here to join
    assert set(options("model")) >= {"dcgan", "mlp"}
    assert set(options("data")) >= {"cifar10", "fashion_mnist", "grid25", "mnist", "ring8", "stacked_mnist", "swissroll"}
    assert set(options("optimizer")) >= {"adam", "rmsprop", "sgd"}


def test_every_loss_class_has_a_yaml() -> None:
    # a loss is its class and its YAML: no class in gan_lab.losses is unreachable from the CLI
    classes = {obj for obj in vars(gan_lab.losses).values()
               if isinstance(obj, type) and issubclass(obj, Loss) and obj is not Loss}
    targets = {compose_train(f"loss={loss}").loss._target_ for loss in options("loss")}
    assert {f"gan_lab.losses.{cls.__name__}" for cls in classes} <= targets


@pytest.mark.parametrize("loss", options("loss"))
@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_loss_and_optimizer_builds(loss: str, optimizer: str) -> None:
    cfg = compose_train(f"loss={loss}", f"optimizer={optimizer}")
    built, schedule = build_loss(OmegaConf.to_container(cfg.loss, resolve=True))
    assert isinstance(built, Loss) and schedule.n_critic >= 1
    opt = build_optimizer(cfg.optimizer, cfg.optimizer_critic, [torch.nn.Parameter(torch.zeros(2))], "critic")
    assert isinstance(opt, torch.optim.Optimizer)


# every data set but CIFAR and CelebA, whose files the tests do not have (tiny_mnist_root holds MNIST and
# Fashion-MNIST)
@pytest.mark.parametrize("data", [d for d in conf_options("data") if d not in ("cifar10", "cifar100", "celeba")])
@pytest.mark.parametrize("model", options("model"))
def test_every_data_and_model_builds(data: str, model: str, tiny_mnist_root: Path) -> None:
    table = ["model.pack=2"] if model == "table" else []  # 4 rows: a pack of 2, not CTGAN's 10
    cfg = compose_train(f"data={data}", f"model={model}", *small_model(model), *table)
    dataset = build_data(cfg, tiny_mnist_root)
    x, y = dataset.sample(4)
    assert x.shape == (4, *dataset.shape)
    if (model == "table") != (data == "table") and model != "mlp":
        pytest.skip(f"model={model} with data={data}: its refusal is tested in test_model_rules / test_table_data")
    if model != "mlp" and len(dataset.shape) == 1 and model != "table":
        pytest.skip(f"{model} is for images; its refusal of 2-D data is tested in test_errors / test_resnets")
    layout = {"layout": dataset.layout} if model == "table" else {}
    G, critic = instantiate(cfg.model, shape=dataset.shape, **layout)
    fake = G(torch.randn(4, G.z_dim))
    # a table's critic takes the conditional vector beside the rows; an unconditional critic ignores labels
    assert fake.shape == x.shape and critic(fake, y).shape == (4 // getattr(critic, "pack", 1),)


def test_cifar10_config_composes_and_dcgan_builds_for_32x32_rgb() -> None:
    cfg = compose_train("data=cifar10")
    assert cfg.data.name == "cifar10" and cfg.model._target_ == "gan_lab.models.dcgan"
    G, critic = instantiate(cfg.model, shape=(3, 32, 32))
    assert G(torch.randn(2, G.z_dim)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("loss, target, lr, extra", [
    ("wgan_clip", "torch.optim.RMSprop", 5e-5, {}),
    ("wgan_gp", "torch.optim.Adam", 1e-4, {"betas": [0.0, 0.9]}),
    ("minimax", "torch.optim.Adam", 2e-4, {"betas": [0.5, 0.999]}),
    ("nonsaturating", "torch.optim.Adam", 2e-4, {"betas": [0.5, 0.999]}),
    ("r3gan", "torch.optim.Adam", 2e-4, {"betas": [0.0, 0.99]}),
])
def test_loss_presets_bring_their_papers_optimizer(loss: str, target: str, lr: float, extra: dict) -> None:
    cfg = compose_train(f"loss={loss}")
    assert cfg.optimizer._target_ == target and cfg.optimizer.lr == lr
    assert all(list(cfg.optimizer[k]) == v for k, v in extra.items())


def test_preset_values() -> None:
    assert (compose_train("loss=wgan_clip").loss.clip, compose_train("loss=wgan_clip").loss.n_critic) == (0.01, 5)
    assert compose_train("loss=wgan_gp", "data=mnist").loss.lambda_gp == 10  # the paper's image setting
    assert compose_train("loss=wgan_gp").loss.lambda_gp == 0.1  # measured toy setting (README)
    assert compose_train("loss=minimax").loss.n_critic == 1
    for data in ("ring8", "grid25", "mnist"):  # R3GAN: RpGAN + R1 + R2 with the data set's gamma, one critic step
        cfg = compose_train("loss=r3gan", f"data={data}")
        assert cfg.loss._target_ == "gan_lab.losses.RpGAN" and cfg.loss.n_critic == 1
        assert cfg.loss.lambda_r1 == cfg.loss.lambda_r2 == cfg.data.recommended.gamma > 0


def test_command_line_wins_over_presets() -> None:
    cfg = compose_train("loss=wgan_gp", "optimizer=sgd")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and "betas" not in cfg.optimizer
    assert compose_train("loss=wgan_clip", "optimizer.lr=1e-3").optimizer.lr == 1e-3
    assert compose_train("loss=wgan_gp", "loss.lambda_gp=100").loss.lambda_gp == 100
    assert compose_train("data=mnist", "model=mlp").model._target_ == "gan_lab.models.mlp"


def test_image_data_brings_dcgan() -> None:
    for data in ("mnist", "fashion_mnist", "cifar10", "stacked_mnist"):
        assert compose_train(f"data={data}").model._target_ == "gan_lab.models.dcgan"
    assert compose_train().model._target_ == "gan_lab.models.mlp"


def test_per_network_optimizer_overrides() -> None:
    cfg = compose_train("optimizer_critic.lr=4e-4")
    params = [torch.nn.Parameter(torch.zeros(2))]
    critic_opt = build_optimizer(cfg.optimizer, cfg.optimizer_critic, params, "critic")
    gen_opt = build_optimizer(cfg.optimizer, cfg.optimizer_generator, params, "generator")
    assert critic_opt.param_groups[0]["lr"] == 4e-4 and gen_opt.param_groups[0]["lr"] == 1e-4
    assert critic_opt is not gen_opt


def test_default_is_wgan_gp_on_ring8_with_mlp() -> None:
    cfg = compose_train()
    assert (cfg.loss._target_, cfg.data.name, cfg.model._target_) == (
        "gan_lab.losses.Wasserstein", "ring8", "gan_lab.models.mlp")
    assert cfg.loss.lambda_gp > 0 and cfg.loss.n_critic == 5 and cfg.device == "auto"


@pytest.mark.slow
def test_cli_help_lists_groups_and_cfg_job_prints_the_config() -> None:
    out = subprocess.run([sys.executable, "-m", "gan_lab", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for line in (f"loss: {', '.join(options('loss'))}", "model: dcgan, mlp"):
        assert line in out.stdout
    job = subprocess.run([sys.executable, "-m", "gan_lab", "train", "--cfg", "job", "loss=hinge"],
                         capture_output=True, text=True)
    assert job.returncode == 0 and "_target_: gan_lab.losses.Hinge" in job.stdout


@pytest.mark.slow  # pip installs the package and a Python subprocess reads it
def test_non_editable_install_finds_its_configs(tmp_path: Path) -> None:
    # A plain (non-editable) install copies the package elsewhere: the YAML must ship inside it.
    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(repo)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert (target / "gan_lab" / "conf" / "loss" / "wgan_gp.yaml").is_file()
    run = subprocess.run([sys.executable, "-c", "import gan_lab, sys; print(gan_lab.__file__); "
                          "sys.argv[1:] = ['train', '--cfg', 'job', 'data=grid25']; "
                          "from gan_lab.app.cli import main; main()"],
                         capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith(str(target))  # the installed copy, not the source tree
    assert "name: grid25" in run.stdout


def test_ttur_preset_gives_each_network_its_learning_rate(tmp_path: Path) -> None:
    # the two time-scale update rule (Heusel et al. 2017) as SAGAN sets it: G 1e-4, critic 4e-4
    for loss in ("nonsaturating", "wgan_gp"):  # also over a loss preset that brings its own optimizer
        cfg = compose_train(f"loss={loss}", "optimizer=adam_ttur")
        params = [torch.nn.Parameter(torch.zeros(2))]
        opt_g = build_optimizer(cfg.optimizer, cfg.optimizer_generator, params, "generator")
        opt_d = build_optimizer(cfg.optimizer, cfg.optimizer_critic, params, "critic")
        assert [opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]] == [1e-4, 4e-4]
        assert opt_d.param_groups[0]["betas"] == (0.0, 0.9) and "per_network" not in opt_d.defaults
    cfg = compose_train("optimizer=adam_ttur", "optimizer_critic.lr=3e-4")  # the command line still wins
    opt_d = build_optimizer(cfg.optimizer, cfg.optimizer_critic, [torch.nn.Parameter(torch.zeros(2))], "critic")
    assert opt_d.param_groups[0]["lr"] == 3e-4
    run_cli("train", *TINY, *TINY_MLP, "threads=1", "optimizer=adam_ttur", f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert [state[k]["param_groups"][0]["lr"] for k in ("opt_g", "opt_d")] == [1e-4, 4e-4]


def test_the_grid25_sharp_recipe_is_one_override(tmp_path: Path) -> None:
    # conf/experiment/grid25_sharp.yaml: issue #14's fast grid25 recipe, measured in docs/cures_recipe.md
    cfg = compose_train("+experiment=grid25_sharp")
    assert (cfg.loss._target_, cfg.data.name, cfg.model.hidden, cfg.optimizer.lr, cfg.train.lr_schedule,
            cfg.train.steps) == ("gan_lab.losses.RpGAN", "grid25", 384, 2e-3, "linear", 3000)
    assert list(cfg.optimizer.betas) == [0.0, 0.99] and cfg.loss.lambda_r1 == cfg.loss.lambda_r2 == 0.1
    assert compose_train("+experiment=grid25_sharp", "model.hidden=64").model.hidden == 64  # the command line wins
    run_cli("train", "+experiment=grid25_sharp", *TINY, "model.hidden=32", "threads=1", "metrics=false",
            f"hydra.run.dir={tmp_path}")
    config = load_checkpoint(tmp_path)["config"]
    assert (config["loss"]["_target_"], config["data"]["name"], config["train"]["lr_schedule"]) == (
        "gan_lab.losses.RpGAN", "grid25", "linear")
