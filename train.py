"""Train: `python train.py --config configs/digits_pixels.py --workdir runs/digits [--config.x=y ...]`."""

from ar_jax.cli import train_main

if __name__ == "__main__":
    train_main()
