"""Every `odex-train` command the README shows runs as written on a fresh clone.

The commands are read from the README itself (its code blocks and its inline code), so an example
added or changed later is held too. Each is composed and validated exactly as `odex-train` does it
before anything is built (odex.config.preflight with `--cfg job`, in this process: no torch, no run
folder, a fraction of a second each); a mistake there is the same `SystemExit(2)` and one line the
user would see. The cheap ones run: the error examples (`$ odex-train ...` followed by the line it
prints) are run through `main` and must print that line, and `--help` / `--cfg job` run as written.
Placeholders stand for what the reader has: `.../last.pt` a real checkpoint (made by a tiny run
here), `<root>` a folder. The architecture sketch (`dataset=... model=...`) is no command.
"""
from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO, TINY, train_in_process

from odex.config import preflight
from odex.train import main

README = (REPO / "README.md").read_text()


def _blocks_and_prose(text: str) -> tuple[list[str], list[str]]:
    """The lines inside ``` blocks, and the lines outside them."""
    inside, outside, in_block = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block:
            inside.append(line)
        else:
            outside.append(line)
    return inside, outside


def readme_commands() -> list[str]:
    block, prose = _blocks_and_prose(README)
    found = [line.split(" #")[0].strip() for line in block if line.startswith("odex-train")]
    for line in prose:
        found += re.findall(r"`(odex-train(?: [^`]*)?)`", line)
    return [c for c in dict.fromkeys(found) if not re.search(r"=\.\.\.(\s|$)", c)]   # the sketch


def readme_error_examples() -> list[tuple[str, str]]:
    """(`odex-train ...` after `$ `, the line the README says it prints)."""
    block, _ = _blocks_and_prose(README)
    return [(line[2:], block[i + 1]) for i, line in enumerate(block) if line.startswith("$ odex-train")]


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_every_kind():
    """A check on the extraction itself: a single run, a sweep, options, and the three examples that
    once failed as written, now written with what they need."""
    assert "odex-train" in COMMANDS and "odex-train --help" in COMMANDS
    assert any(c.startswith("odex-train -m ") for c in COMMANDS)
    for needed in ("model=cpl objective=margin eval=[clean,pgd,certified]",
                   "callbacks=[swa,best_checkpoint] dataset.val_fraction=0.1",
                   "solver=rk4 solver.method=heun3 solver.steps=10"):
        assert any(needed in c for c in COMMANDS), needed
    assert len(readme_error_examples()) >= 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint for `trainer.init_from=.../last.pt`: one tiny epoch on the digits."""
    folder = tmp_path_factory.mktemp("ckpt")
    assert train_in_process(folder, TINY)["status"] == "completed"
    return folder / "checkpoints" / "last.pt"


def _argv(command: str, checkpoint, tmp_path) -> list[str]:
    words = shlex.split(command)[1:]
    out = []
    for w in words:
        if ".../" in w:
            w = re.sub(r"[^=]*\.\.\./last\.pt", str(checkpoint), w)
        out.append(w.replace("<root>", str(tmp_path / "data")))
    return out


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.endswith(("--help", "--cfg job"))])
def test_every_readme_command_composes_and_validates(command, tmp_path, request, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = request.getfixturevalue("checkpoint") if ".../" in command else None
    argv = [*_argv(command, ckpt, tmp_path), "--cfg", "job"]
    assert preflight(argv) == argv          # a mistake raises SystemExit(2) with its line on stderr
    assert not list(tmp_path.glob("outputs"))


@pytest.mark.parametrize("command,printed", readme_error_examples(), ids=[c for c, _ in readme_error_examples()])
def test_the_readme_error_examples_print_what_it_says(command, printed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*shlex.split(command)[1:], f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    shown = printed.split("...")[0] if printed.endswith("...") or "(use ...)" in printed else printed
    if shown != printed:
        assert err.startswith(shown.rstrip()), (err, printed)
    else:
        assert err == printed
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options", [["--help"], ["--cfg", "job"]])
def test_the_readme_options_run_as_written(options, tmp_path, capsys, monkeypatch):
    assert f"odex-train {' '.join(options)}" in COMMANDS
    monkeypatch.chdir(tmp_path)
    try:
        main(options)
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert ("== Examples ==" in out) if options == ["--help"] else ("_target_: odex.models.augmented.AugmentedNODE" in out)
    assert not (tmp_path / "outputs").exists()
