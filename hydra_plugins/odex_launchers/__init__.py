"""odex's Hydra launchers. Hydra instantiates launchers only from its `hydra_plugins` namespace
package, so the class lives here and its behaviour in odex/sweep/slurm_launcher.py.

Hydra imports every module of the namespace when it starts: without the submitit plugin (the
`slurm` extra) there is nothing to extend, and nothing is defined (no warning at every start)."""
try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher
except ImportError:
    pass
else:
    from odex.sweep.slurm_launcher import RecordLostJobs

    class SlurmLauncher(RecordLostJobs, _SubmititSlurmLauncher):
        """hydra/launcher=slurm: submitit's SLURM launcher; a job cancelled (scancel) or lost is
        recorded as failed and the sweep ends with its summary (odex/sweep/slurm_launcher.py)."""
