"""The fastai step against a plain PyTorch loop doing the same computation, step by step in one training run.

Every iteration of one fastai training run (`masktwins_learner`, `fit_one_cycle`, the benchmark's recipe) is followed
by the same step in plain PyTorch (`em_speed.plain_step`: its own model, teacher and `torch.optim.Adam`) on the same
batch, so the two are timed alternately, step by step, under the same machine load. Both are timed phase by phase:

  fwd   source forward                               (fastai: before_batch -> the last after_pred callback)
  loss  losses; MaskTwins: teacher, augmentation, masks, both views' forward   (-> the last after_loss)
  bwd   backward                                      (-> the last after_backward)
  opt   optimiser step (+ EMA update)                 (-> the last after_step)
  rest  fastai only: zero_grad and the after_batch callbacks (recorder, scheduler, counters)

The ratio reported is the median over steps of fastai step / plain step (each pair measured back to back), with its
inter-quartile range. Minor page faults per step are counted too (the CPU allocator returns large freed buffers to the
OS and faults them back in, which can differ between two loops that keep different tensors alive).

  python benchmarks/fastai_overhead.py --device cpu --threads 2 --out benchmarks/results/fastai_overhead_cpu.json
  python benchmarks/fastai_overhead.py --device cpu --threads 2 --allocator tuned --out benchmarks/results/fastai_overhead_cpu_tuned.json
"""
from __future__ import annotations
import argparse, json, resource, sys, time
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO/'benchmarks'))
from masktwins_nb.cpu import apply_cpu_env
apply_cpu_env()   # OpenMP threads and wait policy, before torch loads (cpu notebook)

PHASES = ('fwd', 'loss', 'bwd', 'opt', 'rest', 'total')

def _faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def interleaved(method, arrs, dev, n, warmup):
    "Per-step phase times (s) and page faults of the fastai step and the plain step of `method`, alternating in one run"
    from fastai.callback.core import Callback, CancelValidException
    from em_speed import make_dls, fastai_learner, plain_step, _sync, RECIPE
    def clock(): _sync(dev); return time.perf_counter()
    dls = make_dls(arrs, dev, n + warmup)
    learn = fastai_learner(method, dls, dev)
    marks, rows = {}, []
    plain = plain_step(method, dev, mark=lambda k: marks.__setitem__(k, clock()))
    class First(Callback):   # runs before every other callback of each event
        order = -100
        def before_batch(self): self.t = dict(start=clock()); self.f0 = _faults()
        def before_validate(self): raise CancelValidException()
    first = First()
    class Last(Callback):    # runs after every other callback of each event
        order = 100
        def after_pred(self): first.t['fwd'] = clock()
        def after_loss(self): first.t['loss'] = clock()
        def after_backward(self): first.t['bwd'] = clock()
        def after_step(self): first.t['opt'] = clock()
        def after_batch(self):
            t = first.t; t['rest'] = clock(); fa_faults = _faults() - first.f0
            xs, xt, ys = self.learn.xb[0], self.learn.split_target.xt, self.learn.yb[0]
            f0 = _faults(); marks.clear(); marks['start'] = clock(); plain(xs, xt, ys); pl_faults = _faults() - f0
            marks['rest'] = marks['opt']
            rows.append(dict(fastai=_phases(t), plain=_phases(marks), fastai_faults=fa_faults, plain_faults=pl_faults))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, RECIPE['lr'], cbs=[first, Last()])
    return rows[warmup:]

def _phases(t):
    ks = ('start',) + PHASES[:-1]
    d = {k: t[k] - t[p] for p, k in zip(ks, ks[1:])}
    d['total'] = t['rest'] - t['start']
    return d

def summary(rows):
    "Medians (ms) per phase, the per-step fastai/plain ratio (median, quartiles, share of steps where fastai is slower)"
    med = {w: {k: 1e3 * float(np.median([r[w][k] for r in rows])) for k in PHASES} for w in ('fastai', 'plain')}
    ratio = np.array([r['fastai']['total'] / r['plain']['total'] for r in rows])
    return dict(median_ms=med, ratio_median=float(np.median(ratio)), ratio_q25=float(np.quantile(ratio, .25)),
                ratio_q75=float(np.quantile(ratio, .75)), fastai_slower_share=float((ratio > 1).mean()),
                faults_median=dict(fastai=float(np.median([r['fastai_faults'] for r in rows])),
                                   plain=float(np.median([r['plain_faults'] for r in rows]))), n_steps=len(rows))

def table(res)->str:
    L = [f"device {res['device']}, {res['threads']} threads, {res.get('allocator', 'default')} allocator; per method: medians over the timed steps (ms), "
         f"each fastai step followed by the plain step on the same batch"]
    for m, s in res['methods'].items():
        L.append(f"{m} ({s['n_steps']} steps)")
        L.append(f"  {'loop':<7}" + ''.join(f'{k:>8}' for k in PHASES) + f"{'faults':>8}")
        for w in ('fastai', 'plain'):
            L.append(f"  {w:<7}" + ''.join(f"{s['median_ms'][w][k]:8.1f}" for k in PHASES) + f"{s['faults_median'][w]:8.0f}")
        L.append(f"  fastai / plain per step: median {s['ratio_median']:.3f} (quartiles {s['ratio_q25']:.3f}-{s['ratio_q75']:.3f}); "
                 f"fastai slower in {100 * s['fastai_slower_share']:.0f} % of steps")
    return '\n'.join(L)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None, help='real data root or cache .npz (default: $MASKTWINS_DATA or ../shared/data)')
    p.add_argument('--device', default='cpu'); p.add_argument('--threads', type=int, default=2)
    p.add_argument('--methods', nargs='+', default=['source_only', 'masktwins'], choices=['source_only', 'masktwins'])
    p.add_argument('--n', type=int, default=40, help='timed steps per method')
    p.add_argument('--warmup', type=int, default=4, help='steps not timed')
    p.add_argument('--allocator', default='default', choices=['default', 'tuned'],
                   help="CPU: glibc's default allocator, or `tune_cpu_allocator` (freed memory kept in the process)")
    p.add_argument('--out', default=None)
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    if a.allocator == 'tuned':
        from masktwins_nb.cpu import tune_cpu_allocator
        if not tune_cpu_allocator(): raise SystemExit('tune_cpu_allocator: not available here (not glibc)')
    from em_benchmark import load_arrays, RECIPE
    dev = torch.device(a.device)
    arrs = load_arrays(a.data, RECIPE['downscale'])
    runs = {m: interleaved(m, arrs, dev, a.n, a.warmup) for m in a.methods}
    res = dict(device=a.device, threads=a.threads, allocator=a.allocator, n=a.n, warmup=a.warmup, methods={m: summary(r) for m, r in runs.items()}, steps=runs)
    print(table(res))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__': main()
