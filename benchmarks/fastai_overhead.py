"""Where a fastai step spends its time against a plain PyTorch loop (source-only U-Net step of the EM recipe).

Both are timed phase by phase (forward, loss, backward, optimiser) on the same batches in one process, as interleaved
loops (plain, fastai, plain, fastai, ...; a fresh model each), because on the CPU the forward and backward times of
one loop vary by about 10 % from loop to loop, as much as the difference being measured: one loop of each is not enough.

  python benchmarks/fastai_overhead.py --device cpu --threads 2 --out benchmarks/results/fastai_overhead_cpu.json
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO/'benchmarks'))

def _med(v, skip): return float(np.median(v[skip:]))

def fastai_phases(dls, dev, skip):
    import torch
    from fastai.callback.core import Callback, CancelValidException
    from masktwins_nb.learner import masktwins_learner
    from em_speed import new_model, _sync
    learn = masktwins_learner(dls, new_model(dev), method='source_only', metrics=[])
    T = {}
    class Timer(Callback):
        order = -20
        def _t(self): _sync(dev); return time.perf_counter()
        def before_batch(self): self.t = dict(b=self._t())
        def after_pred(self): self.t['pred'] = self._t()
        def after_loss(self): self.t['loss'] = self._t()
        def after_backward(self): self.t['bwd'] = self._t()
        def after_step(self): self.t['step'] = self._t()
        def after_batch(self):
            t, e = self.t, self._t()
            for k, a, b in (('fwd', 'b', 'pred'), ('loss', 'pred', 'loss'), ('bwd', 'loss', 'bwd'), ('opt', 'bwd', 'step'), ('total', 'b', None)):
                T.setdefault(k, []).append((t[b] if b else e) - t[a])
        def before_validate(self): raise CancelValidException()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=Timer())
    return {k: _med(v, skip) for k, v in T.items()}

def plain_phases(batches, dev, skip):
    import torch, torch.nn.functional as F
    from em_speed import new_model, _sync
    model = new_model(dev); opt = torch.optim.Adam(model.parameters(), 1e-3); model.train()
    P = {}
    for xs, _, ys in batches:
        _sync(dev); t0 = time.perf_counter(); o = model(xs); _sync(dev); t1 = time.perf_counter()
        l = F.cross_entropy(o, ys, ignore_index=255); _sync(dev); t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True); l.backward(); _sync(dev); t3 = time.perf_counter(); opt.step(); _sync(dev); t4 = time.perf_counter()
        for k, a, b in (('fwd', t0, t1), ('loss', t1, t2), ('bwd', t2, t3), ('opt', t3, t4), ('total', t0, t4)): P.setdefault(k, []).append(b - a)
    return {k: _med(v, skip) for k, v in P.items()}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None, help='real data root or cache .npz (default: $MASKTWINS_DATA or ../shared/data)')
    p.add_argument('--device', default='cpu'); p.add_argument('--threads', type=int, default=2)
    p.add_argument('--n', type=int, default=24, help='steps per loop (the first 4 are not counted)')
    p.add_argument('--rounds', type=int, default=3, help='interleaved plain/fastai loops')
    p.add_argument('--out', default=None)
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from em_benchmark import load_arrays
    from em_speed import make_dls
    dev = torch.device(a.device)
    arrs = load_arrays(a.data, 2)
    dls = make_dls(arrs, dev, a.n)
    batches = [tuple(t.clone() for t in b) for b in dls.train]
    runs = []   # interleaved: plain, fastai, plain, fastai, ... (a fresh model each time)
    for i in range(a.rounds):
        for w in ('plain', 'fastai'):
            runs.append(dict(loop=w, round=i, **(fastai_phases(dls, dev, 4) if w == 'fastai' else plain_phases(batches, dev, 4))))
    keys = ('fwd', 'loss', 'bwd', 'opt', 'total')
    med = {w: {k: float(np.median([r[k] for r in runs if r['loop'] == w])) for k in keys} for w in ('plain', 'fastai')}
    print(f"device {a.device}, {a.threads} threads; per loop: median ms over {a.n - 4} steps (source-only step, crop 128, bs 8)")
    print(f"{'loop':<8} {'round':>5} " + ' '.join(f'{k:>7}' for k in keys))
    for r in runs: print(f"{r['loop']:<8} {r['round']:>5} " + ' '.join(f"{r[k]*1e3:7.1f}" for k in keys))
    for w in ('plain', 'fastai'): print(f"{w:<8} {'med':>5} " + ' '.join(f"{med[w][k]*1e3:7.1f}" for k in keys))
    ratio = med['fastai']['total'] / med['plain']['total']
    spread = {w: (min(r['total'] for r in runs if r['loop'] == w), max(r['total'] for r in runs if r['loop'] == w)) for w in med}
    print(f"fastai / plain (medians of {a.rounds} interleaved loops each): {ratio:.3f}; "
          + '; '.join(f"{w} totals {lo*1e3:.0f}-{hi*1e3:.0f} ms" for w, (lo, hi) in spread.items()))
    res = dict(runs=runs, median=med, fastai_vs_plain=ratio)
    if a.out: Path(a.out).write_text(json.dumps(dict(device=a.device, threads=a.threads, n=a.n, rounds=a.rounds, **res), indent=1))

if __name__ == '__main__': sys.exit(main())
