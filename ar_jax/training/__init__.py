"""Training: state, steps, checkpoints and the loop (`train_and_evaluate`)."""


def train_and_evaluate(config, workdir):  # noqa: ANN001, ANN201 - thin lazy re-export
    """Train the run described by `config` in `workdir` (resuming if it has checkpoints); see trainer.py."""
    from ar_jax.training.trainer import train_and_evaluate as run

    return run(config, workdir)
