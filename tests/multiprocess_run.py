"""Driver for the two-process test: `python tests/multiprocess_run.py PORT PROCESS_ID WORKDIR`.

Each process has 2 forced CPU devices; jax.distributed joins them into one 4-device mesh over 127.0.0.1.
"""

import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent.parent))


def main(port: str, pid: str, workdir: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
    from ar_jax.training import trainer
    from ar_jax.training.metrics import read_metrics
    from tests.sharded_run import config

    trainer.train_and_evaluate(config((-1, 1, 1)), workdir)
    if jax.process_index() == 0:
        out = {"devices": jax.device_count(), "processes": jax.process_count(),
               "losses": [m["loss"] for m in read_metrics(workdir) if "loss" in m]}
        (Path(workdir) / "multiprocess.json").write_text(json.dumps(out))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
