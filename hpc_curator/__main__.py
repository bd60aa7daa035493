"""``python -m hpc_curator`` runs the CLI (so srun and mpiexec need no script on PATH)."""

from hpc_curator.cli import main

if __name__ == "__main__":
    main()
