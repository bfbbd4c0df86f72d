"""Training: `leanpremise train`, the masked cached contrastive loss, negatives, checkpoints, DDP.

Entry points: :func:`leanpremise.train.runner.run_training` (library) and
:func:`leanpremise.train.cli.main` (command line).
"""
