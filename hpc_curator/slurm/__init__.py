"""Slurm launcher: settings, the sbatch renderer, submitit glue, job status."""
