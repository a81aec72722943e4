"""The run folder's lock and Hydra's record of the run, written only by the process that holds it.
Hydra writes `.hydra/`, the job log and `multirun.yaml` before odex has checked anything and has
no setting that delays them, so odex turns them off and writes them itself (`claim`,
`write_job_record`, `start_log_file`, `sweep_record`). Design notes: docs/design-notes.md, "odex/training/run_record.py".
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import OmegaConf

from odex.errors import ConfigError, OdexError, RunBusy
from odex.training import atomic
from odex.training.resume import LOCK_NAME, RunLock, ignored

log = logging.getLogger("odex")

RECORD = ".hydra"
_CLAIMED: list = []        # this process's early lock (kept until it exits)
_BUFFER: list[logging.handlers.MemoryHandler] = []


def _hydra_value(text: str) -> str:
    """`text` as a value in a Hydra override (quoted unless plainly safe)."""
    if re.fullmatch(r"[A-Za-z0-9_./\-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(override: str) -> str:
    """An override's dotted key, without Hydra's +, ++ or ~."""
    return override.split("=", 1)[0].lstrip("+~")


def claim_early(argv: list[str]) -> None:
    """Before even composing the config: a command that names its folder outright
    (`hydra.run.dir=<folder>`, a multirun's `hydra.sweep.dir=<folder>`), where that folder already
    holds odex's lock file (it held a run), locks it now, so that a second process on it stops
    within about a second of its start. `claim` takes the same lock again (shared within the process);
    a new folder or anything unusual is left to it (nothing is created here)."""
    key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir"
    values = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == key]
    if len(values) != 1 or "$" in values[0] or values[0][:1] in "'\"" or not (Path(values[0]) / LOCK_NAME).is_file():
        return
    lock = RunLock(values[0])
    try:
        lock.__enter__()
    except RunBusy as e:
        print(f"odex: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except (OdexError, OSError):
        return          # a read-only folder, say: `claim` looks at it with the composed config
    _CLAIMED.append(lock)


def claim(argv: list[str]) -> list[str]:
    """Lock the run (or sweep) folder of the command `argv` before anything else, and return the
    arguments for Hydra: the folder pinned, Hydra's own record turned off (odex writes it). Exits
    with one line when the folder is taken (1), cannot be written (1), or holds another sweep (2).
    Torch-free."""
    from hydra._internal.utils import get_args_parser

    from odex.config import USAGE_ERROR, check_composed

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_dir \
            or args.config_path or args.experimental_rerun or args.cfg:
        return argv
    config_name = args.config_name or "train"
    overrides = list(args.overrides)
    try:
        multirun = bool(args.multirun)
        composed = overrides
        if multirun:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            composed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides)
                        if not o.is_sweep_override()]
        cfg = check_composed(config_name, composed, validate_too=False)
        multirun = multirun or str(cfg.hydra.get("mode")) == "RunMode.MULTIRUN"
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        folder = str(OmegaConf.select(cfg, key))
        has_file_log = OmegaConf.select(cfg, "hydra.job_logging.handlers.file") is not None
    except Exception:  # noqa: BLE001 -- preflight let it through: Hydra composes it and says what is wrong
        log.debug("run folder not claimed", exc_info=True)
        return argv
    out = [a for a in argv if _key(a) not in (key, "hydra.output_subdir", "hydra.job_logging.handlers.file.filename")]
    out += [f"{key}={_hydra_value(folder)}", "hydra.output_subdir=null"]
    if has_file_log:
        out.append(f"hydra.job_logging.handlers.file.filename={os.devnull}")
    lock = RunLock(folder)
    try:
        lock.__enter__()
        if multirun:
            _check_sweep(Path(folder), overrides)
    except OdexError as e:
        if lock.held:
            lock.__exit__(None, None, None)
        print(f"odex: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_ERROR if isinstance(e, ConfigError) else 1) from None
    _CLAIMED.append(lock)
    return out


def _check_sweep(sweep_dir: Path, given: list[str]) -> None:
    """A multirun into a folder that holds a sweep must be that sweep (to finish or extend it): the
    same overrides but for Hydra's own and the keys a resume may change (odex.training.resume.IGNORED)."""
    recorded_file = sweep_dir / "multirun.yaml"
    if not recorded_file.is_file():
        return
    try:
        recorded = [str(o) for o in OmegaConf.load(recorded_file).hydra.overrides.task]
    except Exception:  # noqa: BLE001 -- an unreadable record: not ours to judge or to replace
        raise ConfigError(f"hydra.sweep.dir={sweep_dir}: its multirun.yaml cannot be read; use a new folder") from None

    def core(overrides):
        return [o for o in overrides if not (ignored(_key(o)) or re.match(r"hydra($|[./])", _key(o)))]

    recorded, given = core(recorded), core(given)
    if recorded != given:
        old = [o for o in recorded if o not in given] or recorded
        new = [o for o in given if o not in recorded] or given
        raise ConfigError(f"hydra.sweep.dir={sweep_dir}: holds another sweep ({' '.join(old) or 'no overrides'}, "
                          f"not {' '.join(new) or 'no overrides'}): use a new folder, or that sweep's overrides "
                          "to finish it")


# ---------------------------------------------------------------------------------------------
# The record itself

def hydra_config():
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except (ImportError, ValueError):
        return None


def write_job_record(run_dir: str | Path, cfg) -> None:
    """Hydra's `.hydra/` record (config.yaml, hydra.yaml, overrides.yaml: what Hydra's run_job would
    have written), each file atomically. Outside a Hydra run (the Python API) there is none."""
    hc = hydra_config()
    if hc is None:
        return
    out = Path(run_dir) / RECORD
    atomic.makedirs(out)
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)})
    hydra_cfg.hydra.output_subdir = RECORD      # where the record is, as Hydra would have said it
    atomic.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic.write_text(out / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    atomic.write_text(out / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))


def hold_log_lines() -> None:
    """Keep the log lines from now on, for the run's log file once it is opened."""
    if hydra_config() is None:
        return
    handler = logging.handlers.MemoryHandler(capacity=10_000)     # no target: it only holds them
    logging.getLogger().addHandler(handler)
    _BUFFER.append(handler)


def _drop_held() -> list[logging.LogRecord]:
    records: list[logging.LogRecord] = []
    while _BUFFER:
        handler = _BUFFER.pop()
        logging.getLogger().removeHandler(handler)
        records += handler.buffer
        handler.buffer = []
    return records


class _RunLogFile(logging.FileHandler):
    """The job's log file; a full disk silences it (the run's own write says so in one line)
    rather than printing logging's traceback for every line."""

    def handleError(self, record) -> None:  # noqa: N802 -- logging's name
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in atomic.FULL:
            return
        super().handleError(record)


def start_log_file(run_dir: str | Path) -> logging.Handler | None:
    """The job's log file, `<run>/<job name>.log` (appended to, as Hydra does), with the lines held
    since the run started. Returns the handler, for `stop_log_file`."""
    records = _drop_held()
    hc = hydra_config()
    if hc is None:
        return None
    handler = _RunLogFile(Path(run_dir) / f"{hc.job.name}.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    for record in records:
        if record.levelno >= logging.getLogger().getEffectiveLevel():
            handler.handle(record)
    logging.getLogger().addHandler(handler)
    return handler


def stop_log_file(handler: logging.Handler | None) -> None:
    _drop_held()
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


@contextmanager
def sweep_record() -> Iterator[None]:
    """While a multirun runs in this process: Hydra's BasicSweeper writes multirun.yaml atomically,
    and only into a sweep folder without one (docs/design-notes.md)."""
    from hydra._internal.core_plugins import basic_sweeper

    class _OmegaConfRecordOnce:
        """What basic_sweeper sees as `OmegaConf`: OmegaConf, but for `save` (its only use there)."""

        def __getattr__(self, name):
            return getattr(OmegaConf, name)

        @staticmethod
        def save(config, f, resolve: bool = False) -> None:
            path = Path(f)
            if path.name == "multirun.yaml" and path.exists():
                return          # the sweep's record stays the one its first command wrote
            atomic.write_text(path, OmegaConf.to_yaml(config, resolve=resolve))

    original = basic_sweeper.OmegaConf
    basic_sweeper.OmegaConf = _OmegaConfRecordOnce()
    try:
        yield
    finally:
        basic_sweeper.OmegaConf = original
