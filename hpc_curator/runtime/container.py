"""Run every rank inside a container image, or behind any launch prefix.

One value, :class:`Container`, says how a rank's command is wrapped; the Slurm renderer
(``srun [container args] [prefix] python -m ...``) and the local mpi backend
(``mpiexec -n N [prefix] python -m ...``) both ask it, so submit, ``sbatch-script`` and
``run --ranks`` wrap ranks the same way:

- ``apptainer`` / ``singularity``: ``apptainer exec --bind D,... [--nv] IMAGE python ...``;
- ``charliecloud``: ``ch-run -b D ... IMAGE -- python ...`` (each bind's destination must
  exist in the image: Charliecloud images are read-only; checked before launching when the
  image is a directory here). ``USER`` is set if missing, and what fails between ranks in
  separate user namespaces is turned off: MPICH's cross-memory attach
  (``MPIR_CVAR_CH4_CMA_ENABLE=0``) and UCX's fd passing (``UCX_POSIX_USE_PROC_LINK=n``);
- ``pyxis`` (Slurm's enroot plugin): ``srun --container-image=IMAGE --container-mounts=...``,
  under Slurm only;
- ``--launch-prefix 'CMD ...'``: any wrapper (split with :func:`shlex.split`), placed first.

The run directory and the submission directory are bound in at their own paths, with every
``--container-bind SRC[:DST]``; a path already inside another bind is not bound twice.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from hpc_curator.errors import UsageError

RUNTIMES = ("apptainer", "singularity", "charliecloud", "pyxis")
CMA_VAR = "MPIR_CVAR_CH4_CMA_ENABLE"
#: What ranks in separate user namespaces need: no cross-memory attach (MPICH), and no
#: passing of shared-memory file descriptors through /proc/<pid>/fd (UCX: "Permission denied")
NAMESPACE_ENV = {CMA_VAR: "0", "UCX_POSIX_USE_PROC_LINK": "n"}


@dataclass(frozen=True)
class Container:
    """How each rank's command is wrapped.

    Parameters
    ----------
    image
        Image (a path, or for pyxis an enroot URI); ``None``: no container.
    runtime
        One of :data:`RUNTIMES`.
    binds
        Extra ``SRC[:DST]`` bind mounts.
    launch_prefix
        A command placed before everything else (``'nsys profile -o r%q{SLURM_PROCID}'``).
    gpus
        Whether ranks use GPUs (apptainer/singularity then get ``--nv``).
    """

    image: str | None = None
    runtime: str = "apptainer"
    binds: tuple[str, ...] = ()
    launch_prefix: str | None = None
    gpus: bool = False

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UsageError(
                f"--container-runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}"
            )
        if self.launch_prefix is not None:
            try:
                if not shlex.split(self.launch_prefix):
                    raise ValueError("empty")
            except ValueError as exc:
                raise UsageError(
                    f"--launch-prefix {self.launch_prefix!r} cannot be split into words ({exc})",
                    "quote it as a shell would, e.g. --launch-prefix 'numactl --interleave=all'",
                ) from None
        for bind in self.binds:
            if not bind.split(":", 1)[0].startswith("/"):
                raise UsageError(
                    f"--container-bind {bind!r} is not an absolute path",
                    "use SRC[:DST] with absolute paths, e.g. --container-bind /lustre/data",
                )

    @property
    def active(self) -> bool:
        """Whether ranks are wrapped at all."""
        return self.image is not None or self.launch_prefix is not None

    def mounts(self, run_dir: str | Path, workdir: str | Path | None = None) -> list[str]:
        """``SRC:DST`` of every bind: the user's, then the run dir and the work dir."""
        out = [b if ":" in b else f"{b}:{b}" for b in self.binds]
        for path in (run_dir, workdir):
            if path is None:
                continue
            text = str(Path(path).resolve())
            if not any(_inside(text, m.split(":", 1)[1]) for m in out):
                out.append(f"{text}:{text}")
        return out

    def srun_args(self, run_dir: str | Path, workdir: str | Path | None = None) -> list[str]:
        """srun options the runtime needs (pyxis only)."""
        if self.image is None or self.runtime != "pyxis":
            return []
        return [
            f"--container-image={self.image}",
            f"--container-mounts={','.join(self.mounts(run_dir, workdir))}",
            f"--container-workdir={Path(workdir or os.getcwd()).resolve()}",
        ]

    def wrap(
        self, argv: list[str], run_dir: str | Path, workdir: str | Path | None = None
    ) -> list[str]:
        """``argv`` behind the launch prefix and the runtime's command."""
        prefix = shlex.split(self.launch_prefix) if self.launch_prefix else []
        if self.image is None or self.runtime == "pyxis":
            return [*prefix, *argv]
        mounts = self.mounts(run_dir, workdir)
        if self.runtime == "charliecloud":
            binds = [a for m in mounts for a in ("-b", m)]
            cd = ["-c", str(Path(workdir).resolve())] if workdir else []
            return [*prefix, "ch-run", *binds, *cd, self.image, "--", *argv]
        nv = ["--nv"] if self.gpus else []
        cd = ["--pwd", str(Path(workdir).resolve())] if workdir else []
        return [
            *prefix,
            self.runtime,
            "exec",
            "--bind",
            ",".join(mounts),
            *nv,
            *cd,
            self.image,
            *argv,
        ]

    def env(self) -> dict[str, str]:
        """Variables every rank needs inside this runtime (the user's own values win)."""
        if self.image is None or self.runtime != "charliecloud":
            return {}
        return dict(NAMESPACE_ENV)

    def shell_lines(self) -> list[str]:
        """Lines for the job script (before ``srun``)."""
        if self.image is None or self.runtime != "charliecloud":
            return []
        lines = ['export USER="${USER:-$(id -un)}"']
        return lines + [f"export {k}=${{{k}:-{v}}}" for k, v in NAMESPACE_ENV.items()]

    def local_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` completed for ranks started here (``run --ranks``)."""
        if self.image is not None and self.runtime == "pyxis":
            raise UsageError(
                "--container-runtime pyxis works only under srun",
                "use submit/sbatch-script, or apptainer/charliecloud for run --ranks",
            )
        out = dict(env)
        for key, value in self.env().items():
            out.setdefault(key, value)
        if self.image is not None and self.runtime == "charliecloud" and not out.get("USER"):
            import getpass

            out["USER"] = getpass.getuser()
        return out

    def check_image(self, run_dir: str | Path, workdir: str | Path | None = None) -> None:
        """Refuse, before launching, what would fail on every rank.

        Raises
        ------
        UsageError
            A directory image lacks a bind destination (Charliecloud cannot create it), or a
            local image path does not exist.
        """
        if self.image is None or self.runtime == "pyxis":
            return
        image = Path(self.image)
        if not image.exists():
            if self.runtime == "charliecloud" or self.image.startswith(("/", ".")):
                raise UsageError(
                    f"container image {self.image} does not exist",
                    "pass the image's path as seen from this node",
                )
            return  # apptainer accepts docker://, library://, oras:// URIs
        if self.runtime != "charliecloud" or not image.is_dir():
            return
        for mount in self.mounts(run_dir, workdir):
            dst = mount.split(":", 1)[1]
            if dst.startswith("/tmp/") or dst == "/tmp":
                continue  # ch-run binds the host's /tmp itself
            if not (image / dst.lstrip("/")).is_dir():
                raise UsageError(
                    f"charliecloud image {image} has no directory {dst} to bind onto",
                    f"create it in the image (mkdir -p {image / dst.lstrip('/')}) or bind a "
                    "parent with --container-bind",
                )


def _inside(path: str, parent: str) -> bool:
    parent = parent.rstrip("/") or "/"
    return path == parent or path.startswith(parent + "/") or parent == "/"
