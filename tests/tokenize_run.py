"""Driver for the tokenize-resume test: `python tests/tokenize_run.py OUT RECORDS_PER_SHARD KILL_AFTER`.

Tokenizes the digits (the smoke config, two views) into OUT; with KILL_AFTER > 0 the process SIGKILLs itself as it
encodes that many records (mid-shard), as a preempted job would die.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))


def main(out: str, per_shard: str, kill_after: str) -> None:
    from ar_jax.data import tokenize
    from tests.helpers import smoke_config

    real, count = tokenize.encode_record, [0]

    def encode_then_maybe_die(*args, **kwargs):
        count[0] += 1
        if count[0] == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    tokenize.encode_record = encode_then_maybe_die
    tokenize.tokenize(smoke_config(**{"loader.views": "flip"}), out, records_per_shard=int(per_shard))


if __name__ == "__main__":
    main(*sys.argv[1:])
