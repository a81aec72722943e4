"""Every wrong input is one line, `odex: error: <key>=<value>: <what is allowed>`, exit status 2,
before anything is written: run in-process through the CLI's `main` (its validation stage answers
before Hydra makes a run folder, so each case takes a fraction of a second)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, compose_cfg

from odex.config import validate
from odex.errors import ConfigError
from odex.train import main

# (overrides, the key the line must name). Types, ranges, unknown keys, `+` keys, wrong group
# choices, impossible combinations: every config group.
BAD = [
    # dataset
    (["dataset.batch_size=0"], "dataset.batch_size"),
    (["dataset.batch_size=1.5"], "dataset.batch_size"),
    (["dataset.batch_size=abc"], "dataset.batch_size"),
    (["dataset.eval_batch_size=0"], "dataset.eval_batch_size"),
    (["dataset.val_fraction=1.0"], "dataset.val_fraction"),
    (["dataset.val_fraction=-0.1"], "dataset.val_fraction"),
    (["dataset.limit_train=0"], "dataset.limit_train"),
    (["dataset.limit_test=-5"], "dataset.limit_test"),
    (["dataset.augment=maybe"], "dataset.augment"),
    (["dataset.augment={padding: -1}"], "dataset.augment.padding"),
    (["dataset.augment={pad_mode: wrap}"], "dataset.augment.pad_mode"),
    (["dataset.test_fraction=1.5"], "dataset.test_fraction"),
    (["dataset=mnist_t10k", "dataset.train_size=20000"], "dataset.train_size"),
    (["dataset=mnist", "dataset.download=maybe"], "dataset.download"),
    (["dataset=spheres", "dataset.augment=true"], "dataset.augment"),
    (["dataset=spheres", "dataset.outer_range=[1.0]"], "dataset.outer_range"),
    (["dataset=mnsit"], "dataset"),
    (["dataset.batchsize=32"], "dataset.batchsize"),
    # model
    (["model.channels=0"], "model.channels"),
    (["model.hidden=-3"], "model.hidden"),
    (["model.augment_dim=-1"], "model.augment_dim"),
    (["model.activation=gelu"], "model.activation"),
    (["model.time_dependent=yes"], "model.time_dependent"),
    (["model.widht=3"], "model.widht"),
    (["model=lyanet", "model.dropout=1.5"], "model.dropout"),
    (["model=lyanet", "model.encoder=resnet50"], "model.encoder"),
    (["model=cpl", "model.size=XXL"], "model.size"),
    (["model=heavy_ball", "model.preset=imagenet"], "model.preset"),
    (["model=ode_resnet", "model.stages=[]"], "model.stages"),
    (["model=resnet"], "model"),
    (["model=cpl", "dataset=spheres"], "model"),
    # solver
    (["solver.rtol=-1"], "solver.rtol"),
    (["solver.rtol=0", "solver.atol=0"], "solver.rtol"),
    (["solver.t1=0"], "solver.t1"),
    (["solver.max_num_steps=0"], "solver.max_num_steps"),
    (["solver.method=rk45"], "solver.method"),
    (["solver.loop=fast"], "solver.loop"),
    (["solver=rk4", "solver.steps=4", "solver.loop=odex", "solver.method=explicit_adams"], "solver.loop"),
    (["trainer.fixed_grid=odex"], "trainer.fixed_grid"),
    (["trainer.adaptive_loop=odex"], "trainer.adaptive_loop"),
    (["solver=rk4", "solver.steps=0"], "solver.steps"),
    (["solver=rk4", "solver.step_size=null"], "solver.steps"),
    (["solver=dopri8"], "solver"),
    # grad
    (["grad=adjoint", "grad.rtol=-1"], "grad.rtol"),
    (["grad=gq", "grad.c=0"], "grad.c"),
    (["grad=gq", "grad.max_nodes=0"], "grad.max_nodes"),
    (["grad=adjoint", "grad.foo=1"], "grad.foo"),
    (["grad=anode"], "grad"),
    (["grad=gq", "model=ode_resnet", "solver=rk4", "solver.steps=2"], "grad"),
    (["grad=gq", "model=lyanet", "model.dropout=0.0"], "grad"),
    (["grad=backprop"], "grad"),
    # objective
    (["objective=lyanet_path", "grad=gq"], "grad"),
    (["objective=lyanet_mc"], "objective"),
    (["objective.label_smoothing=1.0"], "objective.label_smoothing"),
    (["objective=margin", "objective.margin=-1"], "objective.margin"),
    (["objective=lyanet_mc", "model=lyanet", "objective.samples=0"], "objective.samples"),
    (["objective=hinge"], "objective"),
    # optim
    (["optim.lr=abc"], "optim.lr"),
    (["optim.lr=-0.1"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr"),
    (["optim.weight_decay=-1"], "optim.weight_decay"),
    (["optim=sgd", "optim.momentum=abc"], "optim.momentum"),
    (["optim=sgd", "optim.nesterov=maybe"], "optim.nesterov"),
    (["optim=nero", "optim.constrain=some"], "optim.constrain"),
    (["optim.lrr=0.1"], "optim.lrr"),
    (["optim=adamw"], "optim"),
    (["+optim.momentum=0.9"], "optim.momentum"),
    (["optimizer=adam"], "optimizer"),
    (["+optimizer=sgd"], "optimizer"),
    # schedule
    (["schedule.interval=batch"], "schedule.interval"),
    (["schedule=step", "schedule.scheduler.step_size=0"], "schedule.scheduler.step_size"),
    (["schedule=step", "schedule.scheduler.gamma=2"], "schedule.scheduler.gamma"),
    (["schedule=cosine", "schedule.scheduler.eta_min=-1"], "schedule.scheduler.eta_min"),
    (["schedule=multistep", "schedule.scheduler.milestones=[0,10]"], "schedule.scheduler.milestones[0]"),
    (["schedule=piecewise_linear", "schedule.scheduler.points=[0.5,1.0]"], "schedule.scheduler.points"),
    (["schedule=exponential"], "schedule"),
    # eval
    (["eval=[clean,pgdd]"], "eval"),
    (["eval=pgd", "eval.pgd.linf.steps=0"], "eval.pgd.linf.steps"),
    (["eval=pgd", "eval.pgd.linf.eps=-1"], "eval.pgd.linf.eps"),
    (["eval=pgd", "eval.pgd.linf.eps=abc"], "eval.pgd.linf.eps"),
    (["eval=pgd", "eval.pgd.linf=null", "eval.pgd.l2=null"], "eval.pgd.l2"),
    (["eval=pgd", "eval.pgd.every=0"], "eval.pgd.every"),
    (["eval=dynamics", "eval.dynamics.times=0"], "eval.dynamics.times"),
    (["eval=certified"], "eval"),
    (["eval=[clean,pgd]", "eval.pgd.linf.step=3"], "eval.pgd.linf.step"),
    (["+eval.pgdd.steps=3"], "eval.pgdd"),
    (["eval=pgd", "eval.pgd.losses=[ce,ce]"], "eval.pgd.losses"),
    (["eval=pgd", "eval.pgd.restarts=0"], "eval.pgd.restarts"),
    (["eval=grad_check", "eval.grad_check.threshold=0"], "eval.grad_check.threshold"),
    # callbacks
    (["callbacks=swa", "callbacks.swa.lr_factor=0"], "callbacks.swa.lr_factor"),
    (["callbacks=swa", "callbacks.swa.anneal_strategy=exp"], "callbacks.swa.anneal_strategy"),
    (["callbacks=best_checkpoint"], "callbacks.best_checkpoint.monitor"),
    (["callbacks=[swa,best_checkpoint]", "dataset.val_fraction=0.1", "callbacks.best_checkpoint.mode=up"],
     "callbacks.best_checkpoint.mode"),
    (["callbacks=ema"], "callbacks"),
    # trainer
    (["trainer.max_epochs=-1"], "trainer.max_epochs"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["trainer.seed=abc"], "trainer.seed"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.grad_clip=-1"], "trainer.grad_clip"),
    (["trainer.eval_every=0"], "trainer.eval_every"),
    (["trainer.resume=sometimes"], "trainer.resume"),
    (["trainer.precision=fp16"], "trainer.precision"),
    (["trainer.fixed_grid=fast"], "trainer.fixed_grid"),
    (["trainer.cuda_graph=true"], "trainer.cuda_graph"),
    (["trainer.progress=sometimes"], "trainer.progress"),
    (["trainer.epochs=3"], "trainer.epochs"),
    # logger
    (["logger.mode=live"], "logger.mode"),
    (["logger.tags=abc"], "logger.tags"),
    (["logger=tensorboard"], "logger"),
    # top level, unknown and `+` keys
    (["+foo=1"], "foo"),
    (["lr=0.1"], "lr"),
    (["+trainer.epochs=3"], "trainer.epochs"),
    (["experiment=lyanet_mnist"], "experiment"),
    (["optim.lr=[1,2"], "optim.lr"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_naming_the_key(overrides, key, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main([*overrides, f"hydra.run.dir={run_dir}"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("odex: error: "), lines[0]
    assert "Traceback" not in err + out
    named = lines[0][len("odex: error: "):].lstrip("+")
    assert named.startswith(key), (key, lines[0])
    assert ": " in named                  # and what is allowed
    assert not run_dir.exists()           # nothing touched


def test_enough_bad_inputs_across_every_group():
    groups = {o.split("=")[0].lstrip("+").split(".")[0] for case, _ in BAD for o in case}
    assert len(BAD) >= 60
    assert {"dataset", "model", "solver", "grad", "objective", "optim", "schedule", "eval", "callbacks",
            "trainer", "logger"} <= groups


GOOD = [[], ["experiment=lyanet_fmnist"], ["experiment=backprop_cifar10"], ["experiment=cpl_cifar10"],
        ["experiment=anode_cifar10"], ["experiment=hbnode_mnist"], ["experiment=adamnode_cifar10"],
        ["experiment=spheres_augmented"], ["experiment=lyanet_fmnist", "eval=[clean]"],
        ["eval=[clean,pgd,dynamics]"], ["callbacks=[swa,best_checkpoint]", "dataset.val_fraction=0.1"],
        ["dataset.augment={padding: 2, flip: false}"], ["eval=pgd", "eval.pgd.linf.eps=4/255"],
        ["model=ode_resnet", "grad=anode", "solver=midpoint", "solver.steps=2"],
        ["model=lyanet", "model.encoder=small", "objective=lyanet_mc", "optim=nero"],
        ["objective=lyanet_path", "grad=adjoint"], ["trainer.compile=inductor"]]


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) or "defaults" for o in GOOD])
def test_shipped_configs_validate(overrides):
    cfg = compose_cfg(overrides, keep_hydra=True)
    validate(cfg, dict(cfg.hydra.runtime.choices))


def test_every_experiment_validates():
    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        cfg = compose_cfg([f"experiment={path.stem}"], keep_hydra=True)
        validate(cfg, dict(cfg.hydra.runtime.choices))


def test_validation_imports_no_torch():
    """`odex-train` answers a bad override before torch is loaded: the schema and the validation
    stage import no torch (checked with torch made unimportable)."""
    code = textwrap.dedent("""
        import sys, types
        sys.modules["torch"] = None          # any import of torch now fails
        odex = types.ModuleType("odex")      # the package without its __init__ (which exports odeint)
        odex.__path__ = ["odex"]
        sys.modules["odex"] = odex
        from odex.config import check_composed
        from odex.errors import ConfigError
        try:
            check_composed("train", ["optim.lr=abc"])
        except ConfigError as e:
            print(e)
        check_composed("train", ["experiment=lyanet_fmnist"])
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "optim.lr=abc: must be a number >= 0"


def test_a_swept_bad_value_fails_only_its_job_and_all_bad_refuses_the_sweep(tmp_path, capsys):
    """Up front, a multirun refuses a mistake every job shares (nothing is started)."""
    with pytest.raises(SystemExit) as exit_:
        main(["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "optim.lr=abc,-1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["odex: error: optim.lr=abc: must be a number >= 0"]
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(SystemExit) as exit_:      # a group choice that does not exist: Hydra cannot compose it
        main(["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "optim=adam,adamw"])
    assert exit_.value.code == 2 and not (tmp_path / "sweep").exists()


def test_a_configerror_names_key_and_value():
    cfg = compose_cfg(["dataset.eval_batch_size=0"])
    with pytest.raises(ConfigError, match=r"^dataset\.eval_batch_size=0: must be an integer >= 1$"):
        validate(cfg)


def test_a_gradient_method_of_the_users_own_is_validated_by_what_it_declares():
    """tests/plugins/sixth_gradient.py declares its method's schema: the validation stage imports it
    (its folder is on hydra.searchpath), checks its keys and asks its declared capabilities (no
    train-mode BatchNorm in the field), as for odex's own. (tests/test_plugins.py: the same from the
    command line, in a fresh process.)"""
    cfg = compose_cfg(["grad=checkpointed"], keep_hydra=True)
    validate(cfg, dict(cfg.hydra.runtime.choices))
    cfg = compose_cfg(["grad=checkpointed", "+grad.rtol=1e-3"], keep_hydra=True)
    with pytest.raises(ConfigError, match="grad.rtol"):
        validate(cfg, dict(cfg.hydra.runtime.choices))
    cfg = compose_cfg(["grad=checkpointed", "model=ode_resnet"], keep_hydra=True)
    with pytest.raises(ConfigError, match="BatchNorm"):
        validate(cfg, dict(cfg.hydra.runtime.choices))


# Issue 27: the classes that escaped the single line (a traceback, Hydra's raw message, a run folder
# made before the error) or were accepted silently. Each class with several inputs; `-m` cases are
# refused before Hydra starts the sweep.
ESCAPES = {
    "late cross-key rule (an evaluation's own solver, sizes against the data)": [
        (["eval=grad_check", "eval.grad_check.solver={method: rk4}"], "eval.grad_check.solver.steps"),
        (["eval=pgd", "eval.pgd.solver={method: euler}"], "eval.pgd.solver.steps"),
        (["eval=[clean,pgd]", "eval.pgd.solver={method: euler, step_size: 3.0}"], "eval.pgd.solver.step_size"),
        (["eval=grad_check", "eval.grad_check.solver={method: explicit_adams, loop: odex}"],
         "eval.grad_check.solver.loop"),
        (["grad=anode", "solver=rk4", "solver.steps=2", "eval=pgd", "eval.pgd.solver={method: dopri5}"],
         "eval.pgd.solver.method"),
        (["model=cpl", "objective=margin", "eval=grad_check"], "eval"),
        (["model=cpl", "model.channels=0"], "model.channels"),
        (["model=cpl", "dataset=cifar10", "model.channels=2"], "model.channels"),
        (["model=cpl", "model.size=tiny", "model.channels=2"], "model.last"),
        (["model=heavy_ball", "model.preset=null"], "model.dim"),
        (["model=heavy_ball", "model.preset=null", "model.dim=1", "model.hidden=4", "dataset=cifar10"], "model.dim"),
        (["model=pixel_node", "model.presets.tiny.dim=3", "model.preset=tiny"], "model.presets.tiny"),
    ],
    "torch's own argument rules": [
        (["optim=sgd", "optim.nesterov=true", "optim.momentum=0"], "optim.nesterov"),
        (["optim=sgd", "optim.nesterov=true", "optim.momentum=0.9", "++optim.dampening=0.1"], "optim.nesterov"),
    ],
    "silent before": [
        (["solver=euler", "solver.step_size=2.0"], "solver.step_size"),
        (["solver=rk4", "solver.step_size=1.5", "solver.t1=1.0"], "solver.step_size"),
        (["callbacks=[best_checkpoint]", "dataset.val_fraction=0.1", "callbacks.best_checkpoint.filename=last.pt"],
         "callbacks.best_checkpoint.filename"),
        (["callbacks=[best_checkpoint]", "dataset.val_fraction=0.1", "callbacks.best_checkpoint.filename=../x.pt"],
         "callbacks.best_checkpoint.filename"),
        (["callbacks=[best_checkpoint]", "dataset.val_fraction=0.1", "callbacks.best_checkpoint.filename=''"],
         "callbacks.best_checkpoint.filename"),
        (["callbacks=[best_checkpoint]", "callbacks.best_checkpoint.monitor=accuracy"],
         "callbacks.best_checkpoint.monitor"),
        (["logger.project=''"], "logger.project"),
        (["logger.project=a/b"], "logger.project"),
        (["dataset=spheres", "model.channels=8", "dataset.inner_radius=1.2"], "dataset.inner_radius"),
        (["dataset=spheres", "dataset.outer_range=[2.0,1.5]"], "dataset.outer_range"),
        (["dataset=spheres", "dataset.n_train=1", "dataset.val_fraction=0.5"], "dataset.val_fraction"),
        (["dataset=mnist_t10k", "dataset.train_size=2", "dataset.val_fraction=0.9"], "dataset.val_fraction"),
    ],
    "exceptions that escaped main": [
        (["eval=[]"], "eval"),
        ([f"trainer.init_from={REPO / 'README.md'}"], "trainer.init_from"),
        ([f"trainer.init_from={REPO / 'pyproject.toml'}"], "trainer.init_from"),
        (["-m", "optim.lr=1e-3,"], "optim.lr"),
        (["optim.lr=1e-3,"], "optim.lr"),
        (["-m", "optim.lr=[1e-3"], "optim.lr"),
        (["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "optim.lr=1,2"], "hydra.launcher.n_jobs"),
        (["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=0", "optim.lr=1,2"],
         "hydra.launcher.timeout_min"),
        (["-m", "sweep=optuna", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials"),
        (["-m", "hydra.sweeper.max_batch_size=0", "optim.lr=1,2"], "hydra.sweeper.max_batch_size"),
        (["-m", "hydra.launcher.n_jobs=1,2", "optim.lr=1,2"], "hydra.launcher.n_jobs"),
        (["hydra.run.dir=/proc/odex"], "hydra.run.dir"),
        (["hydra.run.dir=/etc/hostname/run"], "hydra.run.dir"),
        (["-m", "hydra.sweep.dir=/etc/hostname", "optim.lr=1,2"], "hydra.sweep.dir"),
    ],
    "a comma-separated value without -m": [
        (["eval=clean,pgd"], "eval"), (["dataset=a,b"], "dataset"), (["optim.lr=0.1,0.01"], "optim.lr"),
        (["callbacks=swa,best_checkpoint"], "callbacks"),
    ],
    "a key only the swept choices have": [
        (["-m", "model=heavy_ball,pixel_node", "model.preset=tiny"], "model.preset"),
        (["-m", "optim=sgd,nero", "optim.momentum=0.9"], "optim.momentum"),
    ],
}
ESCAPE_CASES = [(cls, o, k) for cls, cases in ESCAPES.items() for o, k in cases]


@pytest.mark.parametrize("cls,overrides,key", ESCAPE_CASES, ids=[" ".join(o) for _, o, _ in ESCAPE_CASES])
def test_every_escape_is_one_line_naming_the_key(cls, overrides, key, tmp_path, capsys):
    folder = tmp_path / "out"
    given = any(o.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for o in overrides)
    where = [] if given else [f"hydra.sweep.dir={folder}" if "-m" in overrides else f"hydra.run.dir={folder}"]
    with pytest.raises(SystemExit) as exit_:
        main([*overrides, *where])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, (cls, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("odex: error: "), err
    assert "Traceback" not in err + out
    named = lines[0][len("odex: error: "):]
    assert named.startswith(key), (cls, key, lines[0])
    assert not folder.exists()
    assert not list(tmp_path.iterdir())          # no probe left behind either


def test_the_messages_give_advice_that_works(tmp_path, capsys):
    """A comma value without -m says how to sweep or list; a key only swept choices have says ++,
    and ++ then composes every job (checked by the same stage, which would refuse it otherwise)."""
    from odex.config import preflight

    with pytest.raises(SystemExit):
        main(["eval=clean,pgd", f"hydra.run.dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert "use -m" in err and "eval=[clean,pgd] for a list" in err
    with pytest.raises(SystemExit):
        main(["-m", "model=heavy_ball,pixel_node", "model.preset=tiny", f"hydra.sweep.dir={tmp_path / 's'}"])
    err = capsys.readouterr().err
    assert "++model.preset=tiny" in err
    argv = ["-m", "model=heavy_ball,pixel_node", "++model.preset=tiny", f"hydra.sweep.dir={tmp_path / 's'}"]
    assert preflight(argv) == argv
    cfg = compose_cfg(["model=pixel_node", "++model.preset=tiny"], keep_hydra=True)
    validate(cfg, dict(cfg.hydra.runtime.choices))
    cfg = compose_cfg(["eval=[clean,pgd]"], keep_hydra=True)
    validate(cfg, dict(cfg.hydra.runtime.choices))


def test_refusals_hold_only_the_wrong_values():
    """The new rules refuse no shipped recipe and accept the values on the right side of each line."""
    ok = [["solver=euler", "solver.step_size=1.0"], ["solver=rk4", "solver.step_size=2.0", "solver.steps=4"],
          ["optim=sgd", "optim.nesterov=true", "optim.momentum=0.9"],
          ["callbacks=[best_checkpoint]", "dataset.val_fraction=0.1", "callbacks.best_checkpoint.filename=top.pt"],
          ["dataset=spheres", "dataset.inner_radius=0.9"], ["eval=pgd", "eval.pgd.solver={method: rk4, steps: 8}"],
          ["model=cpl", "objective=margin", "dataset=cifar100", "model.size=S"],
          ["model=heavy_ball", "model.preset=null", "model.dim=3", "model.hidden=4", "dataset=cifar10"],
          ["logger.project=my-project"]]
    for overrides in ok:
        cfg = compose_cfg(overrides, keep_hydra=True)
        validate(cfg, dict(cfg.hydra.runtime.choices))


def test_what_the_machine_lacks_is_refused_before_a_folder(tmp_path, capsys, monkeypatch):
    """trainer.device=cuda without CUDA, logger.mode=online without a W&B key: one line, exit 2,
    no run folder (before, the run failed seconds later with its folder and W&B run made)."""
    import torch

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cases = [(["logger.mode=online"], "logger.mode=online: needs a W&B API key"),
             (["trainer.compile=nosuchbackend"], "trainer.compile=nosuchbackend: must be")]
    if not torch.cuda.is_available():
        cases += [(["trainer.device=cuda"], "trainer.device=cuda: CUDA is not available here"),
                  (["-m", "trainer.device=cuda", "optim.lr=0.1,0.01"], "trainer.device=cuda: CUDA")]
    for overrides, line in cases:
        folder = tmp_path / "out"
        where = f"hydra.sweep.dir={folder}" if "-m" in overrides else f"hydra.run.dir={folder}"
        with pytest.raises(SystemExit) as exit_:
            main([*overrides, where])
        err = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"odex: error: {line}"), err
        assert not folder.exists()
