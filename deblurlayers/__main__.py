"""``python -m deblurlayers``: ``info`` (the default: native build status and environment),
``nvcc-check``, ``restore`` (a video or folder of frames) and ``evaluate`` (a test set under the
paper's protocol)."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deblurlayers")
    sub = parser.add_subparsers(dest="command")
    info = sub.add_parser("info", help="build (if needed) and report the native ops")
    info.add_argument("--no-build", action="store_true", help="report without building")
    info.add_argument("--json", action="store_true", help="print JSON")
    nvcc = sub.add_parser("nvcc-check", help="compile-check every CUDA source with nvcc (no GPU needed)")
    nvcc.add_argument("--arch", default="90", help="compute capability without the dot (default 90)")
    nvcc.add_argument("--nvcc", default=None, help="path to nvcc (default: CUDA_HOME or PATH)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["restore"], ["evaluate"]):
        from .pipeline.commands import add_evaluate_parser, add_restore_parser

        add_restore_parser(sub)
        add_evaluate_parser(sub)
    else:  # listed in --help; `info` must not import the models (it reports a broken install)
        sub.add_parser("restore", help="restore a folder of frames or a video file")
        sub.add_parser("evaluate", help="score a model on a test set with its paper's protocol")
    args = parser.parse_args(argv)
    if args.command == "nvcc-check":
        from ._native.nvcc_check import main as nvcc_check

        return nvcc_check(args.arch, args.nvcc)
    if args.command in ("restore", "evaluate"):
        return _run_command(args)
    if args.command is None:
        args = parser.parse_args(["info"] + argv)

    from .info import format_status, native_status

    status = native_status(load=not args.no_build)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    # --no-build reports an unattempted build as it is; a failure (even a shadowed package) is a failure.
    return 0 if status["status"] in ("ok", "disabled") or (args.no_build and status["status"] != "failed") else 1


def _run_command(args: argparse.Namespace) -> int:
    """A refused input is one line on stderr and exit status 2, not a traceback."""
    from .pipeline.commands import CommandError, run_evaluate, run_restore

    try:
        return (run_restore if args.command == "restore" else run_evaluate)(args)
    except CommandError as error:
        print(f"python -m deblurlayers {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
