"""What every part of a run leans on: the errors a user can cause and their one line,
the run's own files, the processes of a multi-host run, the workdir lock, Ctrl-C, XLA's
process-wide options. Imports nothing else of unode_jax."""
