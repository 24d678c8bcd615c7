"""One training step of every model under DistributedDataParallel (gloo, 2 CPU processes) gives the
gradients of one process on the same global batch."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from deblurlayers.models import get_model
from model_cases import CASES, perturb_zero_init, training_loss

pytestmark = pytest.mark.slow  # two processes per model

WORLD = 2
GLOBAL_BATCH = 2


def build(name):
    torch.manual_seed(0)
    model = get_model(name, **CASES[name][0])
    perturb_zero_init(model)
    return model


def batch(name):
    gen = torch.Generator().manual_seed(7)
    t = CASES[name][1]
    blurry = torch.rand(GLOBAL_BATCH, t, 3, 16, 16, generator=gen)
    return blurry, torch.rand(GLOBAL_BATCH, t, 3, 16, 16, generator=gen)


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for name in sorted(CASES):
            model = DistributedDataParallel(build(name))
            blurry, sharp = batch(name)
            shard = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
            training_loss(name, model, blurry[shard], sharp[shard]).backward()
            grads = {n: p.grad.clone() for n, p in model.module.named_parameters() if p.requires_grad}
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):  # a mixed-precision step runs too
                training_loss(name, model, blurry[shard], sharp[shard]).backward()
            finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
            if rank == 0:
                torch.save({"grads": grads, "autocast_finite": finite}, os.path.join(out_dir, f"{name}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_training_step_matches_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for name in sorted(CASES):
        saved = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        model = build(name)
        blurry, sharp = batch(name)
        training_loss(name, model, blurry, sharp).backward()
        assert saved["autocast_finite"], name
        # some gradients are pure rounding (a bias before a softmax): tolerate against the largest
        scale = max(float(p.grad.abs().max()) for p in model.parameters() if p.requires_grad)
        for param_name, grad in saved["grads"].items():
            expected = model.get_parameter(param_name).grad
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6 * scale,
                                       msg=lambda m: f"{name}.{param_name}: {m}")
