"""Median time to make (and apply) a MaskTwins complementary mask pair for an 8x3x1024x1024 batch.

Usage: python benchmarks/mask_speed.py [--device cuda] [--dtype bfloat16] [--bs 8] [--size 1024]"""
import argparse, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from masktwins_nb.masks import mask_views, apply_mask

def median_ms(f, reps=20, warmup=3, sync=lambda: None):
    for _ in range(warmup): f()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); sync(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2] * 1e3

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--device', default='cpu')
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--block', type=int, default=64)
    p.add_argument('--reps', type=int, default=20)
    p.add_argument('--dtype', default='float32')
    a = p.parse_args()
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    x = torch.randn(a.bs, 3, a.size, a.size, device=dev, dtype=getattr(torch, a.dtype))
    g = torch.Generator(dev).manual_seed(0)
    t_masks = median_ms(lambda: mask_views(x, 'complementary', a.block, 0.5, g), a.reps, sync=sync)
    t_views = median_ms(lambda: [apply_mask(x, m) for m in mask_views(x, 'complementary', a.block, 0.5, g)], a.reps, sync=sync)
    where = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f"complementary pair, {a.bs}x3x{a.size}x{a.size} {a.dtype} on {where}: median over {a.reps} runs "
          f"{t_masks:.1f} ms (two masks), {t_views:.1f} ms (masks + two masked views)")
