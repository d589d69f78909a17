"""Sample: `python sample.py --workdir runs/digits --out samples.png [--config.sampling.cfg_scale=2.0 ...]`; caption
with a run trained both ways: `python sample.py --workdir runs/scenes_any --caption a.png b.png`."""

from ar_jax.cli import sample_main

if __name__ == "__main__":
    sample_main()
