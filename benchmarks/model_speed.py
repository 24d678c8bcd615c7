"""Every model against the machine: forward time, frames/s, memory and efficiency, fp32 and bf16.

    python benchmarks/model_speed.py [--models ...] [--size 256] [--repeats 2] [--threads 2]
                                     [--fast] [--memory] [--profile-out PATH]

For every registered model (full-size default configuration, B = 1, the card's frame count; the
models that take any T at the clip length of layer_flops.py's timed forward), under
``torch.inference_mode``: the best of ``--repeats`` forwards after a warm-up, in fp32 and under
bf16 autocast (the native ops stay fp32), frames/s, and **efficiency**: the model's MACs per
second (counted on the meta device, flow estimator included) divided by the MACs per second of a
plain 3×3 ``conv2d`` 64→64 at the same size, in its faster memory layout, in the same run and
dtype. That convolution is about the best a conv-dominated network can do on this CPU.

bf16 accuracy: PSNR between the bf16 and the fp32 output of the same clip (how much bf16 changes
the restored frames), and the change of PSNR against the clip's sharp frames (a synthetic pair:
a texture, and its average over 5 shifted copies as the blurry clip).

``--fast`` adds the inference fast path (:func:`deblurlayers.optimize_for_inference`: channels-last
end to end) in fp32: its time, speed-up over the eager NCHW model (both timed again, alternating,
best of ``--repeats`` each) and efficiency, and its largest deviation from the eager output
(relative to the output's largest magnitude).

``--memory`` adds the peak extra resident memory of one forward (fresh process each; slow).
``--profile-out`` writes a ``torch.profiler`` table of each model's ten most expensive ops (fp32,
self CPU time).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from deblurlayers.flops import count_flops
from deblurlayers.inference import optimize_for_inference
from deblurlayers.metrics import psnr
from deblurlayers.models import get_model, get_model_card, list_models
from layer_flops import ANY_T_FRAMES


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: native library loaded, allocator primed, oneDNN primitives created
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _best_interleaved(fns, repeats: int):
    """The best time of each of ``fns``, called in turn ``repeats`` times after one warm-up each."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")


def conv_ceiling(size: int, dtype: str, repeats: int) -> float:
    """MACs/s of a 3×3 conv 64→64 at ``size``², in the faster of NCHW and channels-last."""
    macs = 64 * 64 * 9 * size * size
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.rand(1, 64, size, size).contiguous(memory_format=layout)
        layer = conv.to(memory_format=layout)
        with torch.inference_mode(), _autocast(dtype):
            best = min(best, _best_seconds(lambda: layer(x), repeats + 3))
    return macs / best


def synthetic_pair(frames: int, size: int):
    """(blurry, sharp) clips (1, T, 3, size, size): a smooth texture drifting 2 px per frame,
    blurred by averaging 5 sub-frame shifts."""
    gen = torch.Generator().manual_seed(0)
    base = F.interpolate(torch.rand(1, 3, size // 8 + 8, size // 8 + 8, generator=gen), scale_factor=8,
                         mode="bicubic", align_corners=False).clamp(0, 1)[0]

    def at(shift: float) -> torch.Tensor:
        whole = int(shift)
        return base[:, whole:whole + size, whole:whole + size]

    sharp = torch.stack([at(2.0 * t) for t in range(frames)])
    blurry = torch.stack([torch.stack([at(2.0 * t + k * 0.4) for k in range(5)]).mean(0) for t in range(frames)])
    return blurry[None], sharp[None]


def measure(name: str, size: int, repeats: int, ceilings, memory: bool, dtypes=("fp32", "bf16"), fast: bool = False):
    card = get_model_card(name)
    frames = card.frames_in or ANY_T_FRAMES[name]
    outputs = frames if card.output == "clip" else 1
    torch.manual_seed(0)
    model = get_model(name).eval()
    blurry, sharp = synthetic_pair(frames, size)
    target = sharp if card.output == "clip" else sharp[:, frames // 2]
    macs = count_flops(model, torch.zeros_like(blurry)).macs
    row = {"name": name, "frames": frames, "gmacs": macs / 1e9}
    out = {}
    for dtype in dtypes:
        with torch.inference_mode(), _autocast(dtype):
            seconds = _best_seconds(lambda: out.__setitem__(dtype, model(blurry).float()), repeats)
        row[f"{dtype}_s"] = seconds
        row[f"{dtype}_fps"] = outputs / seconds
        row[f"{dtype}_efficiency"] = macs / seconds / ceilings[dtype]
        if memory:
            row[f"{dtype}_peak_mb"] = _peak_mb(name, tuple(blurry.shape), dtype)
    if fast:
        # Timed again together with the eager model, alternating, so that this VM's drift (the
        # conv ceiling moves 40-97 GMAC/s between runs) cannot favour either side of the ratio.
        fast_model = optimize_for_inference(copy.deepcopy(model))
        with torch.inference_mode():
            eager_s, seconds = _best_interleaved([lambda: model(blurry),
                                                  lambda: out.__setitem__("fast", fast_model(blurry))], repeats)
        row["fast_s"], row["fast_speedup"] = seconds, eager_s / seconds
        row["fast_efficiency"] = macs / seconds / ceilings["fp32"]
        row["fast_max_rel"] = ((out["fast"] - out["fp32"]).abs().max() / out["fp32"].abs().max()).item()
        model = fast_model  # the one profiled
    if "bf16" in out:
        row["bf16_vs_fp32_psnr"] = psnr(out["bf16"], out["fp32"]).mean().item()
        row["bf16_delta_psnr"] = (psnr(out["bf16"].clamp(0, 1), target)
                                  - psnr(out["fp32"].clamp(0, 1), target)).mean().item()
    return row, model, blurry


def _peak_mb(name: str, shape, dtype: str) -> float:
    from _memory import peak_extra_mb

    setup = f"""
        import torch
        from deblurlayers.models import get_model
        torch.set_num_threads({torch.get_num_threads()})
        model = get_model({name!r}).eval()
        x = torch.rand({shape!r})
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled={dtype == 'bf16'}):
            model(x[..., :32, :32])
    """
    run = f"""
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled={dtype == 'bf16'}):
            model(x)
    """
    return peak_extra_mb(setup, run)


def _cell(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def profile_table(model, clip) -> str:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(clip)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list_models())
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--fast", action="store_true", help="also time optimize_for_inference (fp32)")
    parser.add_argument("--bf16-models", nargs="*", default=None,
                        help="the models also timed under bf16 autocast (default: all)")
    parser.add_argument("--profile-out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ceilings = {dtype: conv_ceiling(args.size, dtype, args.repeats) for dtype in ("fp32", "bf16")}
    print(f"## Models at {args.size}², B = 1, {args.threads} threads, inference_mode\n")
    print(f"Ceiling: 3×3 conv 64→64 at {args.size}²: {ceilings['fp32'] / 1e9:.1f} GMAC/s fp32, "
          f"{ceilings['bf16'] / 1e9:.1f} GMAC/s bf16 (autocast).\n")
    memory_cols = " fp32 peak MB | bf16 peak MB |" if args.memory else ""
    fast_cols = " fast s | fast speed-up (×) | fast efficiency | fast max rel. diff |" if args.fast else ""
    print("| model | T | GMACs | fp32 s | fp32 frames/s | fp32 efficiency | bf16 s | bf16 frames/s | bf16 efficiency "
          f"| bf16 speed-up (×) | PSNR bf16 vs fp32 (dB) | ΔPSNR vs sharp (dB) |{fast_cols}{memory_cols}")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" * 4 if args.fast else "")
          + ("---:|---:|" if args.memory else ""))
    profiles = []
    for name in args.models:
        bf16 = args.bf16_models is None or name in args.bf16_models
        r, model, clip = measure(name, args.size, args.repeats, ceilings, args.memory,
                                 ("fp32", "bf16") if bf16 else ("fp32",), args.fast)
        memory = (f" {r['fp32_peak_mb']:.0f} | {_cell(r.get('bf16_peak_mb'), '.0f')} |" if args.memory else "")
        speedup = r["fp32_s"] / r["bf16_s"] if bf16 else None
        fast = (f" {r['fast_s']:.2f} | {r['fast_speedup']:.2f} | {100 * r['fast_efficiency']:.0f} % | "
                f"{r['fast_max_rel']:.1e} |" if args.fast else "")
        print(f"| {name} | {r['frames']} | {r['gmacs']:.1f} | {r['fp32_s']:.2f} | {r['fp32_fps']:.2f} | "
              f"{100 * r['fp32_efficiency']:.0f} % | {_cell(r.get('bf16_s'), '.2f')} | {_cell(r.get('bf16_fps'), '.2f')} | "
              f"{_cell(r.get('bf16_efficiency'), '.0%')} | {_cell(speedup, '.2f')} | "
              f"{_cell(r.get('bf16_vs_fp32_psnr'), '.1f')} | {_cell(r.get('bf16_delta_psnr'), '+.3f')} |{fast}{memory}",
              flush=True)
        if args.profile_out is not None:
            path = ", fast path" if args.fast else ""
            profiles.append(f"### {name} (fp32{path}, T = {r['frames']}, {args.size}²)\n\n```\n{profile_table(model, clip)}```\n")
    if profiles:
        args.profile_out.write_text("# Ten most expensive ops per model (self CPU time)\n\n" + "\n".join(profiles))
        print(f"\nprofiles: {args.profile_out}")


if __name__ == "__main__":
    main()
