"""Sample: `python sample.py --workdir runs/digits --out samples.png [--config.sampling.cfg_scale=2.0 ...]`."""

from ar_jax.cli import sample_main

if __name__ == "__main__":
    sample_main()
