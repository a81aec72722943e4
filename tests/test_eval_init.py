"""odex-eval (a checkpoint evaluated with its run's configuration, into a new folder) and
trainer.init_from (a new run from a checkpoint's weights)."""
from __future__ import annotations

import json

import pytest
from conftest import TINY, read_metrics, read_summary, run_cli, train_in_process

import odex.evaluate.run as eval_run

RUN = [*TINY, "solver=euler", "logger=none"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run made by the real odex-train, with its .hydra folder."""
    tmp = tmp_path_factory.mktemp("source")
    p = run_cli(tmp, *RUN)
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "run"


def test_eval_reproduces_the_logged_test_metrics_in_a_new_folder(finished, tmp_path):
    before = sorted(p.name for p in finished.rglob("*"))
    out = tmp_path / "eval"
    assert eval_run.main([f"ckpt_path={finished / 'checkpoints/last.pt'}", f"out_dir={out}"]) == 0
    logged, evaluated = read_metrics(finished)[-1], read_metrics(out)[-1]
    for key in ("test/acc", "test/loss", "test/nfe"):
        assert evaluated[key] == logged[key], key          # exactly, not approximately
    summary = read_summary(out)
    assert summary["status"] == "completed" and summary["ckpt_epoch"] == 1
    assert sorted(p.name for p in finished.rglob("*")) == before      # the source run is untouched
    assert (out / ".hydra/config.yaml").is_file()


def test_eval_with_other_evaluators_and_overrides(finished, tmp_path, capsys):
    out = tmp_path / "pgd"
    assert eval_run.main([f"ckpt_path={finished / 'checkpoints/last.pt'}", f"out_dir={out}", "eval=[clean,pgd]",
                          "eval.pgd.limit=16", "eval.pgd.linf.steps=2", "eval.pgd.l2=null"]) == 0
    row = read_metrics(out)[-1]
    assert row["test/acc"] == read_metrics(finished)[-1]["test/acc"]
    assert "test/pgd_linf_acc" in row and "test/pgd_l2_acc" not in row, row
    # a folder that holds something is never written into
    assert eval_run.main([f"ckpt_path={finished / 'checkpoints/last.pt'}", f"out_dir={out}"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"odex: error: out_dir={out}: not empty")


def test_eval_of_an_incompatible_checkpoint_is_one_line(finished, tmp_path, capsys):
    code = eval_run.main([f"ckpt_path={finished / 'checkpoints/last.pt'}", f"out_dir={tmp_path / 'e'}",
                          "model.hidden=24"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith(f"odex: error: ckpt_path={finished / 'checkpoints/last.pt'}: the checkpoint's weights "
                          "do not fit this model")
    assert "other shapes" in err


def test_init_from_starts_from_the_weights(finished, tmp_path):
    """optim.lr=0 leaves the loaded weights as they are: the new run's test metrics are the
    source run's, exactly; a run from scratch with the same seed has other ones."""
    source = read_metrics(finished)[-1]
    ckpt = finished / "checkpoints/last.pt"
    s = train_in_process(tmp_path / "a", [*RUN, f"trainer.init_from={ckpt}", "optim.lr=0"])
    assert s["status"] == "completed"
    assert s["test/acc"] == source["test/acc"] and s["test/loss"] == source["test/loss"]
    scratch = train_in_process(tmp_path / "b", [*RUN, "optim.lr=0"])
    assert scratch["test/loss"] != source["test/loss"]


def test_init_from_an_incompatible_checkpoint_is_one_line(finished, tmp_path):
    p = run_cli(tmp_path, *RUN, "model.hidden=24", f"trainer.init_from={finished / 'checkpoints/last.pt'}")
    errors = [line for line in p.stderr.splitlines() if line.startswith("odex: error:")]
    assert p.returncode == 2 and "Traceback" not in p.stderr      # a usage error (odex.errors.ConfigError)
    assert len(errors) == 1 and "the checkpoint's weights do not fit this model" in errors[0], p.stderr[-2000:]
    assert errors[0].startswith(f"odex: error: trainer.init_from={finished / 'checkpoints/last.pt'}:")
    s = train_in_process(tmp_path / "c", [*RUN, "trainer.init_from=nowhere.pt"])
    assert s["status"] == "failed: trainer.init_from=nowhere.pt: no such file " \
                          "(an odex checkpoint, e.g. <run folder>/checkpoints/last.pt)"
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["status"] == s["status"]
