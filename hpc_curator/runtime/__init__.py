"""Where a rank runs: its world (MPI, Slurm), GPUs, containers, installed versions, launch
checks."""
