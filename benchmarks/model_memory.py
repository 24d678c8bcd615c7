"""Peak extra memory of one forward of every model, eager and on the fast path.

    python benchmarks/model_memory.py [--models ...] [--size 64] [--threads 2] [--eager-only]

For every registered model (full-size default configuration, B = 1, the card's frame count or
layer_flops.py's timed T), in a fresh process each: the resident memory one forward under
``torch.inference_mode`` adds at its peak beyond the weights and the input (``_memory.py``), for
the eager model and for :func:`deblurlayers.optimize_for_inference` (channels-last).
``--eager-only`` measures the eager model alone (for trees that predate the fast path: run it
with ``PYTHONPATH=<an older checkout>`` to compare versions).
"""
from __future__ import annotations

import argparse

from _memory import peak_extra_mb
from deblurlayers.models import get_model_card, list_models
from layer_flops import ANY_T_FRAMES


def forward_peak_mb(name: str, shape, fast: bool, threads: int) -> float:
    prepare = "model = optimize_for_inference(model)" if fast else "model = model.eval()"
    setup = f"""
        import torch
        from deblurlayers.models import get_model
        torch.set_num_threads({threads})
        model = get_model({name!r})
        if {fast!r}:
            from deblurlayers import optimize_for_inference
        {prepare}
        x = torch.rand({tuple(shape)!r})
        with torch.inference_mode():
            model(x[..., :32, :32])
    """
    run = """
        with torch.inference_mode():
            model(x)
    """
    return peak_extra_mb(setup, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list_models())
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eager-only", action="store_true")
    args = parser.parse_args()
    print(f"## Peak extra memory of one forward at {args.size}², B = 1, inference_mode (MB)\n")
    print("| model | T | eager MB |" + ("" if args.eager_only else " fast path MB |"))
    print("|---|---:|---:|" + ("" if args.eager_only else "---:|"))
    for name in args.models:
        card = get_model_card(name)
        frames = card.frames_in or ANY_T_FRAMES[name]
        shape = (1, frames, 3, args.size, args.size)
        cells = [forward_peak_mb(name, shape, False, args.threads)]
        if not args.eager_only:
            cells.append(forward_peak_mb(name, shape, True, args.threads))
        print(f"| {name} | {frames} | " + " | ".join(f"{c:.0f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
