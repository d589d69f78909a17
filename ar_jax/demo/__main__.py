"""`python -m ar_jax.demo --workdir W [--port 7860] [--host 127.0.0.1] [--max_batch 16] [--draft_workdir D]`:
serve a local page for one trained run (needs the `[demo]` extra: `pip install -e '.[demo]'`)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ar_jax.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the run to serve (the only one this server reads)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but 127.0.0.1/localhost makes the page reachable "
                             "from other machines")
    parser.add_argument("--max_batch", type=int, default=16, help="the most images (or captions) one request makes")
    parser.add_argument("--draft_workdir", default=None, help="a smaller run to draft for speculative decoding")
    from ar_jax.cli import add_cores_flag, choose_cores

    add_cores_flag(parser)
    args = parser.parse_args(argv)
    try:
        choose_cores(args.cpu_cores, args.workdir, args.max_batch)
    except ValueError as e:
        sys.exit(f"error: {e}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        from ar_jax.demo.page import build
    except ImportError as e:
        sys.exit(f"the demo needs Gradio ({e}); install the extra: pip install -e '.[demo]'")
    from ar_jax.demo.service import DemoService

    service = DemoService(args.workdir, max_batch=args.max_batch, draft_workdir=args.draft_workdir)
    print(f"compiling {args.workdir} (a warm-up request) ...", flush=True)
    service.warm_up()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"listening on {args.host}: the page is reachable from other machines on that network.", flush=True)
    build(service).queue(max_size=32).launch(server_name=args.host, server_port=args.port, show_error=False,
                                             quiet=False, footer_links=[])


if __name__ == "__main__":
    main()
