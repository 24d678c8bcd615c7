"""FLOPs, parameters and CPU latency of every deblurlayers op, layer and model.

    python benchmarks/layer_flops.py [--full] [--save] [--threads 2] [--skip-latency] [--only models]

The default run is the quick one (about 3 minutes on 2 cores with a warm build cache): each
latency is the median of a short measurement (``--min-run-time 0.05``), and the models are timed
at 64x64, once after a warm-up, with no memory probes; the model table says so. ``--full`` is the
table of ``benchmarks/RESULTS.md``: 0.3 s per latency, models at 256x256, best of 3 forwards,
peak memory in fresh processes (tens of minutes on 2 cores). Rows are printed as they complete.
Nothing is written unless ``--save`` (to benchmarks/results/) or ``--out DIR`` is given.

FLOPs are counted on the meta device (nothing is allocated) with
deblurlayers.flops.count_flops: 1 MAC = 2 FLOPs; matmul, convolution,
attention, grid_sample and our native ops are counted, elementwise ops,
softmax and norms are not. Latency is the median of torch.utils.benchmark
runs of the forward pass on the CPU, with the native kernels and with the
PyTorch reference (DEBLURLAYERS_BACKEND=reference) in the same process.

Models (every name of deblurlayers.models.list_models()) get a second table:
parameters, GMACs per restored frame at 256x256 and 1280x720 (meta device)
next to the papers' figures, and CPU forward time (best of --model-repeats
runs) and peak extra memory (a fresh process each, benchmarks/_memory.py) at
256x256, native vs reference.

With --save the tables are also written to benchmarks/results/layer_flops.{md,json}.
Each later layer adds its rows to ROWS; the models' rows come from their model cards.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.utils.benchmark import Timer

import deblurlayers
from deblurlayers import ops
from deblurlayers.flops import count_flops

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One benchmarked callable at a stated input size.

    ``make`` returns ``(module_or_fn, inputs)``; inputs are built on the CPU in
    fp32. ``native`` says whether a native kernel exists (else only the
    reference column is timed).
    """

    name: str
    size: str
    make: Callable[[], Tuple[Callable, Tuple[torch.Tensor, ...]]]
    native: bool = True


def _haar_dwt():
    return ops.haar_dwt2d, (torch.randn(1, 64, 360, 640),)


def _haar_idwt():
    return ops.haar_idwt2d, (torch.randn(1, 64, 180, 320), torch.randn(1, 192, 180, 320))


def _flow_warp():
    return ops.flow_warp, (torch.randn(1, 64, 180, 320), 4 * torch.randn(1, 2, 180, 320))


def _pixel_filter(down):
    def make():
        x = torch.randn(1, 64, 184, 320)
        kernels = torch.randn(1, 64 * 9, 184 // down, 320 // down)
        return (lambda x, k: ops.pixel_dynamic_filter(x, k, 3)), (x, kernels)
    return make


def _ms_deform_attn():
    h, w = 64, 64  # STDANet's 256x256 training crops at 1/4
    value = torch.randn(1, 3 * h * w, 4, 32)
    loc = torch.rand(1, 3 * h * w, 4, 3, 12, 2)
    weights = torch.rand(1, 3 * h * w, 4, 3, 12).softmax(-1)
    return (lambda v, l, a: ops.ms_deform_attn(v, [(h, w)] * 3, None, l, a)), (value, loc, weights)


def _stda_inputs():
    return torch.randn(1, 3, 128, 64, 64), 2 * torch.randn(1, 2, 2, 64, 64), 2 * torch.randn(1, 2, 2, 64, 64)


def _deformable_attention():
    from deblurlayers import DeformableAttention

    x, _, _ = _stda_inputs()
    return DeformableAttention(), (x, x, 2 * torch.randn(1, 3, 3, 2, 64, 64))


def _mma():
    from deblurlayers import MultiToMultiAttention

    x, nxt, prv = _stda_inputs()
    return MultiToMultiAttention(), (x, x, nxt, prv)


def _msa():
    from deblurlayers import MultiToSingleAttention

    x, nxt, prv = _stda_inputs()
    return MultiToSingleAttention(), (x, x, nxt, prv)


def _stda():
    from deblurlayers import STDA

    return STDA(), _stda_inputs()


def _blur_map():
    from deblurlayers import BlurMap

    flows = 4 * torch.randn(1, 47, 2, 64, 64)  # BSSTNet: 48 frames, 256² at 1/4
    return BlurMap(), (flows, flows.flip(1))


def _bsst_inputs(frames=24):
    blur = torch.full((1, frames, 1, 32, 32), 0.05)  # a quarter of the windows blurry in half the frames
    blur[0, [t for t in range(frames) if t % 4 < 2], 0, :16, :16] = 1.0
    return torch.randn(1, frames, 32, 32, 512), blur


def _bsst_layer():
    from deblurlayers import BlurAwareSparseAttention

    return BlurAwareSparseAttention(), _bsst_inputs()


def _bsst_stack():
    from deblurlayers.layers import BlurAwareSparseTransformer

    return BlurAwareSparseTransformer(), _bsst_inputs()


def _soft_split():
    from deblurlayers.layers import SoftSplit

    return SoftSplit(), (torch.randn(1, 24, 192, 64, 64),)


def _factorized_attention():
    from deblurlayers import FactorizedSTAttention

    return FactorizedSTAttention(), (torch.randn(1, 5, 64, 64, 64),)


def _cwgdn():
    from deblurlayers import CWGDN

    return CWGDN(), (torch.randn(1, 10, 64, 64, 64),)


def _dtff():
    from deblurlayers import DTFF

    x = torch.randn(1, 64, 128, 128)
    return DTFF(), (x, torch.randn_like(x))


def _wavelet_fp():
    from deblurlayers import WaveletFP

    return WaveletFP(), (torch.randn(1, 4, 64, 128, 128),)


def _deform_conv2d():
    x = torch.randn(1, 64, 180, 320)
    offset, mask = 2 * torch.randn(1, 144, 180, 320), torch.rand(1, 72, 180, 320)
    weight, bias = torch.randn(64, 64, 3, 3), torch.randn(64)
    return (lambda *a: ops.deform_conv2d(*a[:4], padding=1, mask=a[4])), (x, offset, weight, bias, mask)


def _dcn_pack():
    from deblurlayers import ModulatedDeformConv2d

    x = torch.randn(1, 64, 128, 128)
    return ModulatedDeformConv2d(64, 64, deformable_groups=8), (x, torch.randn_like(x))


def _blur_aware_alignment():
    from deblurlayers import BlurAwareAlignment

    c, h = 192, 64
    flows, sharp = 2 * torch.randn(1, 2, 2, h, h), torch.rand(1, 2, h, h)
    return BlurAwareAlignment(c), (torch.randn(1, 2 * c, h, h), torch.randn(1, 3 * c + 5, h, h), flows, sharp)


def _pyramid_block():
    from deblurlayers import DilatedPyramidBlock

    return DilatedPyramidBlock(64, num_branches=4), (torch.randn(1, 128, 128, 128),)


def _pyramid_align():
    from deblurlayers import PyramidDeformableAlign

    levels = [torch.randn(1, 64, 128 >> i, 128 >> i) for i in range(4)]
    return PyramidDeformableAlign(), (levels, [torch.randn_like(t) for t in levels])


def _gradient_map():
    from deblurlayers import GradientMap

    return GradientMap(), (torch.rand(1, 3, 256, 256),)


def _gradient_branch():
    from deblurlayers import SFTGradientBranch

    feats = [torch.randn(1, 32 << j, 256 >> j, 256 >> j) for j in range(3)]
    return SFTGradientBranch(), (torch.rand(1, 3, 256, 256), feats)


def _raft():
    from deblurlayers.models import RAFT

    return RAFT().eval(), (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128), 20)


ROWS: List[Row] = [
    Row("ops.haar_dwt2d", "1x64x360x640", _haar_dwt),
    Row("ops.haar_idwt2d", "1x64x180x320 (+3C highs)", _haar_idwt),
    Row("ops.flow_warp", "1x64x180x320", _flow_warp, native=False),
    Row("ops.pixel_dynamic_filter", "1x64x184x320, k=3, full-res kernels", _pixel_filter(1)),
    Row("ops.pixel_dynamic_filter", "1x64x184x320, k=3, kernels at 1/8", _pixel_filter(8)),
    Row("ops.ms_deform_attn", "value 1x3·64²x4x32, Lq=3·64², L=3, P=12", _ms_deform_attn),
    Row("layers.DeformableAttention (MMA layout)", "1x3x128x64x64 (STDANet, 256² at 1/4)", _deformable_attention),
    Row("layers.MultiToMultiAttention (MMA)", "1x3x128x64x64", _mma),
    Row("layers.MultiToSingleAttention (MSA)", "1x3x128x64x64", _msa),
    Row("layers.STDA (MMA + MSA)", "1x3x128x64x64", _stda),
    Row("layers.BlurMap", "flows 1x47x2x64x64 (BSSTNet, 48 frames of 256² at 1/4)", _blur_map, native=False),
    Row("layers.SoftSplit (BSSTNet)", "1x24x192x64x64 -> 1x24x32x32x512", _soft_split, native=False),
    Row("layers.BlurAwareSparseAttention (one layer)", "1x24x32x32x512 (BSSTNet, T=24), 1/4 windows blurry in 1/2 frames",
        _bsst_layer, native=False),
    Row("layers.BlurAwareSparseTransformer (4 layers)", "1x24x32x32x512, as above", _bsst_stack, native=False),
    Row("layers.FactorizedSTAttention", "1x5x64x64x64 (T=5, C=64)", _factorized_attention, native=False),
    Row("layers.CWGDN", "1x10x64x64x64 (DSTNet, 256² at 1/4)", _cwgdn, native=False),
    Row("layers.DTFF (one step)", "1x64x128x128 (DSTNet, 256² at 1/2)", _dtff),
    Row("layers.WaveletFP", "1x4x64x128x128 (DSTNet config)", _wavelet_fp),
    Row("ops.deform_conv2d", "1x64x180x320, 3x3, 64->64, 8 offset groups", _deform_conv2d),
    Row("layers.ModulatedDeformConv2d (ERDN DCNv2Pack)", "1x64x128x128, 8 groups", _dcn_pack),
    Row("layers.BlurAwareAlignment (BSSTNet BFA, one step)", "1x384x64x64 -> 192, 16 groups (256² at 1/4)",
        _blur_aware_alignment),
    Row("layers.DilatedPyramidBlock (4 branches, ERDN l1)", "1x128x128x128 -> 64", _pyramid_block, native=False),
    Row("layers.PyramidDeformableAlign (ERDN PCD)", "4 levels from 1x64x128x128", _pyramid_align),
    Row("layers.GradientMap", "1x3x256x256", _gradient_map, native=False),
    Row("layers.SFTGradientBranch", "1x3x256x256 + encoder features", _gradient_branch, native=False),
    Row("models.RAFT (20 iterations)", "2 x 1x3x128x128 (BSSTNet: a 256² tile at x0.5)", _raft, native=False),
]


# Clip length of the timed forward for the models that take any T (the others take their card's
# frames_in): short enough for a CPU run.
ANY_T_FRAMES = {"dstnet": 5, "dstnet_l": 5, "fstanet": 5, "bsstnet": 8}


@dataclass
class ModelInfo:
    """A registered model's benchmark input (``frames`` frames in, ``outputs`` restored frames out)
    and what its paper reports, from its model card. ``flops_frames``: the clip length FLOPs are
    counted at (default ``frames``). ``takes_flows``: the model accepts flows at 1/4 resolution
    (BSSTNet); its FLOPs are counted with given flows (the network, as the paper counts) and with
    its own flow estimator."""

    frames: int
    outputs: int
    paper: str
    flops_frames: Optional[int] = None
    takes_flows: bool = False

    @classmethod
    def from_card(cls, name: str) -> "ModelInfo":
        from deblurlayers.models import get_model_card

        card = get_model_card(name)
        frames = card.frames_in or ANY_T_FRAMES[name]
        return cls(frames, frames if card.output == "clip" else 1, card.compute, card.flops_frames, card.takes_flows)


def _params(fn: Callable, trainable_only: bool = False) -> int:
    if not isinstance(fn, torch.nn.Module):
        return 0
    return sum(p.numel() for p in fn.parameters() if p.requires_grad or not trainable_only)


def _latency_ms(fn: Callable, inputs, backend: str, threads: int, min_run_time: float) -> float:
    with ops.use_backend(backend), torch.no_grad():
        timer = Timer("fn(*inputs)", globals={"fn": fn, "inputs": inputs}, num_threads=threads)
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def measure(row: Row, threads: int, min_run_time: float, latency: bool) -> Dict:
    fn, inputs = row.make()
    count = count_flops(fn, *inputs)
    result = {"name": row.name, "size": row.size, "params": _params(fn),
              "gmacs": count.gmacs, "gflops": count.gflops, "native_ms": None, "reference_ms": None}
    if latency:
        result["reference_ms"] = _latency_ms(fn, inputs, "reference", threads, min_run_time)
        if row.native:
            result["native_ms"] = _latency_ms(fn, inputs, "native", threads, min_run_time)
    return result


def _model_forward_ms(name: str, frames: torch.Tensor, backend: str, repeats: int) -> float:
    """Best of ``repeats`` forwards after a warm-up."""
    from deblurlayers.models import get_model

    model = get_model(name).eval()
    best = float("inf")
    with ops.use_backend(backend), torch.no_grad():
        model(frames)  # warm-up: native build loaded, allocator primed
        for _ in range(repeats):
            start = time.perf_counter()
            model(frames)
            best = min(best, time.perf_counter() - start)
    return best * 1e3


def _model_peak_mb(name: str, shape: Tuple[int, ...], backend: str, threads: int) -> float:
    from _memory import peak_extra_mb

    setup = f"""
        import torch
        from deblurlayers import ops
        from deblurlayers.models import get_model
        torch.set_num_threads({threads})
        model = get_model({name!r}).eval()
        x = torch.rand({shape!r})
        with ops.use_backend({backend!r}), torch.no_grad():
            model(x[..., :32, :32])
    """
    run = f"""
        with ops.use_backend({backend!r}), torch.no_grad():
            model(x)
    """
    return peak_extra_mb(setup, run)


def measure_model(name: str, threads: int, repeats: int, latency: bool, size: int = 256, full: bool = True) -> Dict:
    """``full=False`` (the quick run): FLOPs at the timed T, not the paper's (BSSTNet's T = 48
    count takes 40 s a size on the meta device), and no memory probes."""
    from deblurlayers.models import get_model

    info = ModelInfo.from_card(name)
    model = get_model(name)
    frames = (info.flops_frames or info.frames) if full else info.frames
    outputs = info.outputs * frames // info.frames
    per_frame, with_flows = {}, {}
    for label, (h, w) in (("256", (256, 256)), ("720p", (720, 1280))):
        clip = torch.zeros(1, frames, 3, h, w)
        if info.takes_flows:
            flows = torch.zeros(1, frames - 1, 2, *model.flow_size(h, w))
            per_frame[label] = count_flops(model, clip, flows, flows).gmacs / outputs
            with_flows[label] = count_flops(model, clip).gmacs / outputs
        else:
            per_frame[label] = count_flops(model, clip).gmacs / outputs
    result = {"name": name, "frames": info.frames, "flops_frames": frames, "params": _params(model, True),
              "frozen_params": _params(model) - _params(model, True), "gmacs_256": per_frame["256"],
              "gmacs_720p": per_frame["720p"], "paper": info.paper}
    if with_flows:
        result["gmacs_256_with_flow_estimator"] = with_flows["256"]
        result["gmacs_720p_with_flow_estimator"] = with_flows["720p"]
    if latency:
        shape = (1, info.frames, 3, size, size)
        frames = torch.rand(shape)
        for backend in ("native", "reference"):
            result[f"{backend}_ms"] = _model_forward_ms(name, frames, backend, repeats)
            if full:
                result[f"{backend}_peak_mb"] = _model_peak_mb(name, shape, backend, threads)
    return result


def models_to_markdown(results: List[Dict], meta: Dict) -> str:
    lines = [
        "## Models",
        "",
        "GMACs per restored frame (a clip model's count divided by its T; counted at the T in brackets "
        "where it differs); forward time (best of "
        f"{meta['model_repeats']}) and peak extra memory at 1x T x 3 x {meta['model_size']} x {meta['model_size']}, "
        f"{meta['threads']} thread(s), fp32"
        + ("" if meta["full"] else " (**quick run**: times at 64x64, not comparable with the 256x256 table of "
                                   "RESULTS.md; no memory probes; `--full` for that table)")
        + ". Params: trainable (+ frozen, e.g. a flow estimator kept outside the state_dict).",
        "",
        "| model | T | params | GMACs/frame 256² | GMACs/frame 720p | native ms | reference ms | "
        "native peak MB | reference peak MB | paper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for r in results:
        t = f"{r['frames']}" + (f" ({r['flops_frames']})" if r.get("flops_frames", r["frames"]) != r["frames"] else "")
        params = f"{r['params']:,}" + (f" (+{r['frozen_params']:,})" if r.get("frozen_params") else "")
        lines.append(f"| {r['name']} | {t} | {params} | {r['gmacs_256']:.1f} | {r['gmacs_720p']:.0f} | "
                     f"{_fmt(r.get('native_ms'), '.0f')} | {_fmt(r.get('reference_ms'), '.0f')} | "
                     f"{_fmt(r.get('native_peak_mb'), '.0f')} | {_fmt(r.get('reference_peak_mb'), '.0f')} | "
                     f"{r['paper']} |")
        if "gmacs_256_with_flow_estimator" in r:
            notes.append(f"- {r['name']}: GMACs/frame above with the flows given (the network, as the paper "
                         f"counts); with its own flow estimator {r['gmacs_256_with_flow_estimator']:.1f} at 256² and "
                         f"{r['gmacs_720p_with_flow_estimator']:.0f} at 720p."
                         + (" The timed forward estimates its flows." if "native_ms" in r else ""))
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _fmt(value: Optional[float], spec: str) -> str:
    return "—" if value is None else format(value, spec)


def to_markdown(results: List[Dict], meta: Dict) -> str:
    lines = [
        f"# deblurlayers layer FLOPs ({meta['date']})",
        "",
        f"torch {meta['torch']}, {meta['cpu']}, {meta['threads']} thread(s), fp32, forward pass. "
        "1 MAC = 2 FLOPs; matmul/conv/attention/grid_sample/native ops counted, elementwise ops not. "
        f"Native status: {meta['native']}.",
    ]
    if not results:  # --only models: no layer table, not even its header
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "| name | input | params | GMACs | GFLOPs | native ms | reference ms | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        speedup = (r["reference_ms"] / r["native_ms"]) if r["native_ms"] and r["reference_ms"] else None
        lines.append(f"| {r['name']} | {r['size']} | {r['params']:,} | {r['gmacs']:.3f} | {r['gflops']:.3f} | "
                     f"{_fmt(r['native_ms'], '.2f')} | {_fmt(r['reference_ms'], '.2f')} | "
                     f"{_fmt(speedup, '.2f')}{'' if speedup is None else '×'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="the full table (0.3 s per latency, models at 256x256 with memory): tens of minutes")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/layer_flops.{md,json}")
    parser.add_argument("--out", type=Path, default=None, help="write layer_flops.{md,json} to this folder")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for latency (default 2)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds per latency measurement (default 0.05; 0.3 with --full)")
    parser.add_argument("--skip-latency", action="store_true", help="FLOPs and parameters only")
    parser.add_argument("--model-repeats", type=int, default=None,
                        help="timed forward passes per model and backend (default 1; 3 with --full)")
    parser.add_argument("--only", choices=("all", "layers", "models"), default="all", help="which tables to run")
    args = parser.parse_args(argv)
    min_run_time = args.min_run_time or (0.3 if args.full else 0.05)
    repeats = args.model_repeats or (3 if args.full else 1)
    model_size = 256 if args.full else 64
    from deblurlayers.models import get_model_card, list_models

    missing = sorted(name for name in list_models() if ANY_T_FRAMES.get(name) is None
                     and get_model_card(name).frames_in is None)
    if missing:
        raise SystemExit(f"layer_flops.py: no ANY_T_FRAMES entry for registered model(s) {missing}")

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    status = deblurlayers.native_status(load=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": args.threads, "model_repeats": repeats, "model_size": model_size, "full": args.full,
            "min_run_time": min_run_time,
            "native": status["status"] + (f" ({status['reason'].splitlines()[-1]})" if status["reason"] else "")}
    start = time.perf_counter()
    rows = ROWS if args.only != "models" else []
    names = list_models() if args.only != "layers" else []
    total = len(rows) + len(names)
    results, models = [], []
    for row in rows:
        results.append(measure(row, args.threads, min_run_time, not args.skip_latency))
        _progress(len(results), total, start, to_markdown([results[-1]], meta).splitlines()[-1])
    for name in names:
        models.append(measure_model(name, args.threads, repeats, not args.skip_latency, model_size, args.full))
        row_line = next(line for line in models_to_markdown([models[-1]], meta).splitlines()
                        if line.startswith(f"| {name} |"))
        _progress(len(results) + len(models), total, start, row_line)
    table = to_markdown(results, meta) + ("\n" + models_to_markdown(models, meta) if models else "")
    print(table)
    out = args.out or (RESULTS if args.save else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "layer_flops.md").write_text(table)
        (out / "layer_flops.json").write_text(
            json.dumps({"meta": meta, "rows": results, "models": models}, indent=2) + "\n")
        print(f"written to {out}/layer_flops.md and .json")
    print(f"layer_flops.py: {total} rows in {time.perf_counter() - start:.0f} s"
          + ("" if args.full else " (quick run; --full for the RESULTS.md table)"))


def _progress(done: int, total: int, start: float, line: str) -> None:
    """One finished row, with how far along the run is."""
    elapsed = time.perf_counter() - start
    print(f"[{done}/{total}, {elapsed:.0f} s] {line}", flush=True)


if __name__ == "__main__":
    main()
