"""The one error type for mistakes a user can cause.

`odex-train` turns an `OdexError` into one line on stderr and a non-zero exit (or, inside a sweep,
into `status: failed: <message>` for that job while the other jobs go on). Anything else is a bug
and keeps its traceback.
"""


class OdexError(Exception):
    """A user-facing error: a bad override, a missing dataset, an invalid combination."""


class ConfigError(OdexError):
    """The configuration asks for something that cannot work (e.g. grad=anode with dopri5)."""


class DatasetNotFound(OdexError):
    """A dataset is not on disk and could not be downloaded."""


class TrainingFailed(OdexError):
    """Training cannot go on: a NaN loss, a solver that underflows, out of memory."""


class SolverError(TrainingFailed):
    """The ODE solver gave up (step size underflow, too many steps)."""


class RunBusy(OdexError):
    """Another process holds the run folder's lock."""


class RunStateError(OdexError):
    """A run folder's checkpoint, summary or metrics file cannot be read."""


class DataFileError(DatasetNotFound):
    """A dataset file is there but damaged (truncated, corrupt)."""


class RunStopped(OdexError):
    """Training was stopped on purpose before its last epoch: the run's status is
    `<kind>: <message>` (neither `completed` nor `failed`), its curve and last good checkpoint stay."""

    kind = "stopped"


class Diverged(RunStopped):
    """Run health (odex/training/health.py): the run cannot recover (loss non-finite or far above
    its start, NFE far above its early level, the solver giving up, an epoch over its time budget)."""

    kind = "diverged"


class Pruned(RunStopped):
    """Pruning across a sweep (odex/sweep/pruning.py): the job is behind the sweep's other jobs."""

    kind = "pruned"


class DiskFull(RunStateError):
    """The disk of a run folder cannot take what a command would write (ENOSPC, a quota)."""


class ReadOnlyFolder(RunStateError):
    """A run folder cannot be written (a read-only mount, no permission)."""


class ChangedFile(RunStateError):
    """A checkpoint's bytes differ from the checksum odex wrote next to it."""
