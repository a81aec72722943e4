"""Parts of the user's own, from a folder outside odex (tests/plugins/: one .py and one YAML each),
used as a user uses them: `hydra.searchpath=[file://<folder>]` on the command line of a fresh
process, with no PYTHONPATH to that folder and nothing imported beforehand (conftest imports none
of them). The validation stage finds each part by its `_target_`, imports it from that folder and
reads its declared schema, so a plugin's keys and capabilities are checked as odex's own are:

- a sixth gradient method (grad=checkpointed: sixth_gradient.py), with no train-mode BatchNorm;
- an adaptive Butcher tableau (solver.method=my_tableaux.RALSTON21 solver.loop=odex);
- an evaluator (eval=[clean,confidence]: my_evaluators.py, with a ranged key);
- a model with BatchNorm in its vector field (model=mlp_node: my_models.py) and an objective
  (objective=focal: my_objectives.py).

One run trains with the first three, one with the model and the objective; one process asks
odex-train's validation stage (odex.config.preflight, its first step) about each refusal: exit
status 2 and one line each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PLUGINS, TINY, read_metrics, read_summary

SEARCH = f"hydra.searchpath=[file://{PLUGINS}]"

pytestmark = pytest.mark.slow        # three fresh processes that load torch (~45 s on a busy 2-core machine)


def fresh(tmp_path, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`python <args>` in a new process, in tmp_path, with no PYTHONPATH: only the searchpath can
    make tests/plugins/'s modules importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", ODEX_DATA=str(tmp_path / "data"))
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_run_trains_with_a_gradient_method_a_tableau_and_an_evaluator_of_the_users_own(tmp_path):
    run = tmp_path / "run"
    p = fresh(tmp_path, ["-m", "odex.train", f"hydra.run.dir={run}", SEARCH, *TINY, "logger=none",
                         "grad=checkpointed", "solver.loop=odex", "solver.method=my_tableaux.RALSTON21",
                         "eval=[clean,confidence]", "eval.confidence.temperature=2.0"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert read_summary(run)["status"] == "completed"
    row = read_metrics(run)[-1]
    assert row["nfe/forward"] > 0
    assert row["nfe/backward"] > 0          # checkpointed backprop solves again in the backward pass
    assert 0.1 <= row["test/confidence"] <= 1.0     # a mean top-class probability of 10 classes
    recorded = (run / ".hydra" / "config.yaml").read_text()
    assert "method: my_tableaux.RALSTON21" in recorded and "sixth_gradient.CheckpointedBackprop" in recorded


def test_a_run_trains_a_model_of_the_users_own_with_an_objective_of_the_users_own(tmp_path):
    run = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("model.")]
    p = fresh(tmp_path, ["-m", "odex.train", f"hydra.run.dir={run}", SEARCH, *tiny, "logger=none",
                         "model=mlp_node", "model.width=16", "objective=focal", "objective.gamma=1.0"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert read_summary(run)["status"] == "completed"
    row = read_metrics(run)[-1]
    assert row["nfe/forward"] > 0 and 0 <= row["test/acc"] <= 1 and row["train/loss"] > 0
    # odex-eval finds the run's parts through the searchpath the run recorded
    p = fresh(tmp_path, ["-m", "odex.evaluate.run", f"ckpt_path={run}/checkpoints/last.pt", f"out_dir={tmp_path}/ev"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["test/acc"] == pytest.approx(row["test/acc"])


REFUSALS = {
    # the plugin method declares no train-mode BatchNorm; ode_resnet has BatchNorm in its field
    "combination": (["grad=checkpointed", "model=ode_resnet"],
                    "grad=checkpointed: grad=checkpointed is not valid with BatchNorm in training mode inside "
                    "model=ode_resnet's vector field: use grad="),
    "grad key": (["grad=checkpointed", "++grad.bogus=1"],
                 "grad.bogus=1: grad=checkpointed has no key 'bogus'"),
    "eval key": (["eval=[clean,confidence]", "++eval.confidence.bogus=1"],
                 "eval.confidence.bogus=1: eval=confidence has no key 'bogus'; its keys: temperature"),
    "eval value": (["eval=[clean,confidence]", "eval.confidence.temperature=0"],
                   "eval.confidence.temperature=0: must be a number > 0"),
    "not a tableau": (["solver.loop=odex", "solver.method=my_tableaux.NOT_A_TABLEAU"],
                      "solver.method=my_tableaux.NOT_A_TABLEAU: is a float, not an odex.ode.tableau.ButcherTableau"),
    "no such tableau": (["solver.loop=odex", "solver.method=my_tableaux.RALSTON99"],
                        "solver.method=my_tableaux.RALSTON99: my_tableaux has no 'RALSTON99'"),
    # the tableau declares itself adaptive (error weights): anode recomputes fixed steps only
    "adaptive": (["grad=anode", "solver.loop=odex", "solver.method=my_tableaux.RALSTON21"],
                 "grad=anode: grad=anode recomputes a fixed-step solve, but solver.method=my_tableaux.RALSTON21 is "
                 "adaptive"),
    "loop": (["solver.method=my_tableaux.RALSTON21"],
             "solver.loop=torchdiffeq: steps only torchdiffeq's own methods; solver.method=my_tableaux.RALSTON21 "
             "is a tableau of your own: set solver.loop=odex"),
    # the plugin model declares BatchNorm in its field; gq declares it does not support that
    "model traits": (["model=mlp_node", "grad=gq"],
                     "grad=gq: grad=gq is not valid with BatchNorm in training mode inside model=mlp_node's vector field"),
    "model key": (["model=mlp_node", "++model.bogus=1"],
                  "model.bogus=1: model=mlp_node has no key 'bogus'; its keys: width"),
    "objective key": (["objective=focal", "++objective.bogus=1"],
                      "objective.bogus=1: objective=focal has no key 'bogus'; its keys: gamma"),
    "objective value": (["objective=focal", "objective.gamma=-1"],
                        "objective.gamma=-1: must be a number >= 0"),
    "import": (["grad._target_=no_such_module.Method"],
               "grad._target_=no_such_module.Method: no module 'no_such_module' is importable"),
}


def test_the_validation_stage_refuses_each_plugins_bad_key_and_combination_in_one_line(tmp_path):
    script = textwrap.dedent(f"""
        import contextlib, importlib.util, io, json, sys
        from odex.config import preflight
        # nothing of tests/plugins/ is importable before the searchpath puts its folder on sys.path
        assert importlib.util.find_spec("sixth_gradient") is None
        out = {{}}
        for name, argv in json.loads(sys.argv[1]).items():
            err = io.StringIO()
            code = None
            with contextlib.redirect_stderr(err):
                try:
                    preflight(argv)
                except SystemExit as e:
                    code = e.code
            out[name] = [code, err.getvalue().splitlines()]
        print(json.dumps(out))
    """)
    cases = {name: [f"hydra.run.dir={tmp_path / 'refused'}", SEARCH, *args]
             for name, (args, _) in REFUSALS.items()}
    p = fresh(tmp_path, ["-c", script, json.dumps(cases)])
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.splitlines()[-1])
    for name, (_, expected) in REFUSALS.items():
        code, lines = got[name]
        assert code == 2 and len(lines) == 1, (name, code, lines)
        assert lines[0].startswith(f"odex: error: {expected}"), (name, lines[0])
    assert not (tmp_path / "refused").exists()
