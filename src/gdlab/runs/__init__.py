"""Run management: run directories and their record (metrics.json), checkpoints and resume, the DDP
processes of a run, sweep summaries and the HParams entry."""
