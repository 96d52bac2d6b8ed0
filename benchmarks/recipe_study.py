"""Recipe study for VNC III -> Lucchi at the CPU budget: one run per (variant, seed), any recipe key overridable.

Each run trains with `masktwins_learner` + `fit_iters` exactly as `em_benchmark.py run` does, and stores per evaluation
the loss terms (src_ce, tgt_ce, cm_mse, pl_weight) and the label-free scores (lf_agree, lf_entropy, lf_fg) next to
target IoU. Recipe choices are made from the loss terms and the label-free scores; target IoU is stored for the
final report only.

  python benchmarks/recipe_study.py run --name paper --set method=masktwins --seed 0
  python benchmarks/recipe_study.py batch --plan diag --seeds 0     # the runs of one plan, serially, skipping done ones
  python benchmarks/recipe_study.py show                           # a table of every finished run

Keys for --set: every key of BASE below, plus `method` (a learner method: source_only, selftrain, mic, random_pair,
masktwins). Runs go to runs/recipe/<name>_seed<seed>.json (git-ignored); finished ones are skipped by `batch`.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO/'benchmarks'))
from masktwins_nb.cpu import apply_cpu_env
apply_cpu_env()

# the CPU-budget scale: downscale 4, crop 96 (block a quarter of the crop), one-cycle lr 1e-3
BASE = dict(method='masktwins', iters=600, eval_every=150, crop=96, downscale=4, bs=8, lr=1e-3, pct_start=0.1,
            width=16, depth=4, alpha=0.99, bn='batch', block_size=24, ratio=0.5, cm_weight=0.01, cm_gate='none',
            threshold=0.968, weight_mode='ratio', tgt_weight=1.0, tgt_start=0, subset=1, tile=256)
LEARNER_KEYS = ('alpha', 'bn', 'block_size', 'ratio', 'cm_weight', 'cm_gate', 'threshold', 'weight_mode', 'tgt_weight', 'tgt_start')

PLANS = dict(
    diag=dict(source_only=dict(method='source_only'), paper=dict(), tau90=dict(threshold=0.9),
              gated=dict(cm_gate='pl'), selftrain=dict(method='selftrain')),
    seeds=dict(source_only=dict(method='source_only'), paper=dict()),
    tau=dict(source_only=dict(method='source_only'), tau90=dict(threshold=0.9)),
    long=dict(source_only_900=dict(method='source_only', iters=900), paper_900=dict(iters=900)),
    warm=dict(source_only_900=dict(method='source_only', iters=900), warm300_900=dict(iters=900, tgt_start=300)),
)

def _cast(k, v:str):
    if k not in BASE: raise SystemExit(f"unknown key {k!r}; keys: {', '.join(BASE)}")
    t = type(BASE[k])
    return t(float(v)) if t is int else t(v)

def run(name:str, seed:int, cfg:dict, out:Path, threads:int=1)->dict:
    import torch
    from fastai.torch_core import set_seed
    from masktwins_nb.data import em_dataloaders
    from masktwins_nb.models import UNet
    from masktwins_nb.learner import masktwins_learner
    from masktwins_nb.schedule import fit_iters
    from masktwins_nb.cpu import tune_cpu_allocator
    from masktwins_nb.selection import add_label_free_scores
    from masktwins_nb.run import run_history
    from masktwins_nb.jobs import score_model
    from em_benchmark import load_arrays, domains
    torch.set_num_threads(threads); tune_cpu_allocator()
    arrs = load_arrays(None, cfg['downscale'])
    src, tgt, tst = domains(arrs, 'oracle' if cfg['method'] == 'oracle' else cfg['method'], cfg['subset'])
    set_seed(seed, reproducible=True)
    dls = em_dataloaders(src, tgt, tst, crop=cfg['crop'], downscale=1, bs=cfg['bs'], iters_per_epoch=cfg['eval_every'],
                         seed=seed, device=torch.device('cpu'))
    model = UNet(in_ch=1, n_classes=2, depth=cfg['depth'], width=cfg['width'])
    method = 'source_only' if cfg['method'] == 'oracle' else cfg['method']
    learn = masktwins_learner(dls, model, method=method, seed=seed, **{k: cfg[k] for k in LEARNER_KEYS})
    add_label_free_scores(learn)
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): fit_iters(learn, cfg['iters'], cfg['lr'], pct_start=cfg['pct_start'])
    secs = time.time() - t0
    curve = [dict(iter=(i + 1) * cfg['eval_every'], **e) for i, e in enumerate(run_history(learn, missing=None)[1])]
    test = score_model(learn.model, tst, tile=cfg['tile'], device=torch.device('cpu'))
    tm = getattr(getattr(learn, 'ema_teacher', None), 'teacher', None)
    teacher = score_model(tm, tst, tile=cfg['tile']) if tm is not None else None
    res = dict(name=name, seed=seed, config=cfg, train_seconds=round(secs, 1), threads=threads, test=test,
               test_teacher=teacher, curve=curve)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out/f'.{name}_seed{seed}.tmp'; tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, out/f'{name}_seed{seed}.json')
    return res

def show(out:Path, save:Path|None=None):
    "Print one row per run and a mean ± sd row per variant (with the paired per-seed difference to source-only)"
    rows = [json.loads(p.read_text()) for p in sorted(out.glob('*.json'))]
    cols = ('pl_weight', 'tgt_ce', 'cm_mse', 'lf_agree', 'lf_entropy', 'lf_fg')
    print(f"{'run':28s} {'secs':>6s} " + ' '.join(f'{c:>10s}' for c in cols) + f" {'IoU':>6s} {'tIoU':>6s}")
    for r in rows:
        last = r['curve'][-1]
        f = lambda v: f'{v:10.4f}' if isinstance(v, float) else f'{"-":>10s}'
        t = r['test_teacher']['iou'] if r['test_teacher'] else float('nan')
        print(f"{r['name'] + '_s' + str(r['seed']):28s} {r['train_seconds']:6.0f} " + ' '.join(f(last.get(c)) for c in cols)
              + f" {r['test']['iou']:6.3f} {t:6.3f}")
    by = {}
    for r in rows: by.setdefault(r['name'], {})[r['seed']] = r['test']['iou']
    base = by.get('source_only', {})
    summary = []
    print(f"\n{'variant':20s} {'n':>2s} {'IoU mean':>9s} {'sd':>6s} {'vs source-only (paired)':>24s}")
    for name, d in by.items():
        v = np.array(list(d.values())); common = sorted(set(d) & set(base))
        diff = np.array([d[k] - base[k] for k in common]) if name != 'source_only' else np.array([])
        summary.append(dict(variant=name, seeds=sorted(d), iou_mean=float(v.mean()), iou_sd=float(v.std(ddof=1)) if len(v) > 1 else None,
                            diff_mean=float(diff.mean()) if len(diff) else None, diff_min=float(diff.min()) if len(diff) else None))
        dtxt = f"{diff.mean():+.3f} (min {diff.min():+.3f}, n={len(diff)})" if len(diff) else '-'
        print(f"{name:20s} {len(v):2d} {v.mean():9.3f} {(v.std(ddof=1) if len(v) > 1 else float('nan')):6.3f} {dtxt:>24s}")
    from masktwins_nb.selection import spearman, LabelFreeScores
    pts = [(c, r['name']) for r in rows for c in r['curve'] if c.get('iou') is not None and c.get('lf_agree') is not None]
    rho = {k: spearman([c[k] for c, _ in pts], [c['iou'] for c, _ in pts]) for k in LabelFreeScores.keys}
    fin = {k: spearman([r['curve'][-1][k] for r in rows], [r['test']['iou'] for r in rows]) for k in LabelFreeScores.keys}
    print(f"\nSpearman rank correlation with target IoU: every checkpoint (n={len(pts)}) " +
          ', '.join(f'{k} {v:+.2f}' for k, v in rho.items()) + f"; final checkpoints (n={len(rows)}) " +
          ', '.join(f'{k} {v:+.2f}' for k, v in fin.items()))
    ch = choose(rows); print(f"\nlabel-free choice among {CANDIDATES}: {ch['chosen']} ({ch['candidates']})")
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(dict(base=BASE, summary=summary, spearman_checkpoints=rho, spearman_final=fin, choice=ch, runs=[dict(name=r['name'], seed=r['seed'], config=r['config'],
                        train_seconds=r['train_seconds'], test=r['test'], test_teacher=r['test_teacher'], curve=r['curve'])
                        for r in rows]), indent=1))

CANDIDATES = ('paper', 'tau90')   # same budget (600 iterations), the paper's loss with tau 0.968 / 0.9

def choose(rows:list)->dict:
    """The label-free choice among `CANDIDATES`: drop collapsed ones (final foreground share below half the source-only
    model's), then take the lowest final mean entropy on the target (means over the seeds each variant has)"""
    fin = lambda name, k: [r['curve'][-1][k] for r in rows if r['name'] == name]
    fg0 = np.mean(fin('source_only', 'lf_fg')) if fin('source_only', 'lf_fg') else 0.
    cand = {n: dict(lf_fg=float(np.mean(fin(n, 'lf_fg'))), lf_entropy=float(np.mean(fin(n, 'lf_entropy'))))
            for n in CANDIDATES if fin(n, 'lf_fg')}
    ok = {n: c for n, c in cand.items() if c['lf_fg'] >= 0.5 * fg0}
    return dict(candidates=cand, source_only_lf_fg=float(fg0),
                chosen=min(ok, key=lambda n: ok[n]['lf_entropy']) if ok else None)

def figure(out:Path, dest:Path):
    "Loss terms, label-free scores and test IoU (plotting only) over the iterations, mean over seeds per variant"
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    rows = [json.loads(p.read_text()) for p in sorted(out.glob('*.json'))]
    keys = (('pl_weight', 'pseudo-label weight q'), ('lf_fg', 'label-free: foreground share'),
            ('lf_entropy', 'label-free: mean entropy (bits)'), ('iou', 'target test IoU (plot only)'))
    fig, axs = plt.subplots(1, 4, figsize=(13, 3), dpi=72)
    for name in sorted({r['name'] for r in rows}):
        rs = [r for r in rows if r['name'] == name]
        it = [c['iter'] for c in rs[0]['curve']]
        for ax, (k, t) in zip(axs, keys):
            v = [[c.get(k) for c in r['curve']] for r in rs if len(r['curve']) == len(it)]
            if not v or v[0][0] is None: continue
            ax.plot(it, np.nanmean(np.array(v, float), 0), 'o-', ms=3, label=f"{name} (n={len(v)})"); ax.set_title(t, fontsize=9)
    for ax in axs: ax.set_xlabel('iteration')
    axs[-1].legend(fontsize=7); plt.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True); fig.savefig(dest); plt.close(fig)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest='cmd', required=True)
    r = sp.add_parser('run'); r.add_argument('--name', required=True); r.add_argument('--seed', type=int, default=0)
    r.add_argument('--set', nargs='*', default=[], help='key=value overrides of BASE')
    b = sp.add_parser('batch'); b.add_argument('--plan', required=True, choices=list(PLANS))
    b.add_argument('--seeds', type=int, nargs='+', default=[0])
    for q in (r, b): q.add_argument('--out', default='runs/recipe'); q.add_argument('--threads', type=int, default=1)
    s = sp.add_parser('show'); s.add_argument('--out', default='runs/recipe')
    s.add_argument('--save', default=None, help='also write the runs and the summary to this JSON file')
    s.add_argument('--figure', default=None, help='also plot the curves to this PNG')
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.cmd == 'run':
        cfg = dict(BASE, **dict((kv.split('=', 1)[0], _cast(*kv.split('=', 1))) for kv in a.set))
        res = run(a.name, a.seed, cfg, out, a.threads)
        print(f"{a.name} seed {a.seed}: IoU {res['test']['iou']:.3f} in {res['train_seconds']:.0f}s")
    elif a.cmd == 'batch':
        for seed in a.seeds:
            for name, ov in PLANS[a.plan].items():
                if (out/f'{name}_seed{seed}.json').exists(): continue
                sets = [f'{k}={v}' for k, v in ov.items()]
                cmd = [sys.executable, __file__, 'run', '--name', name, '--seed', str(seed), '--out', str(out),
                       '--threads', str(a.threads), '--set', *sets]
                t0 = time.time(); rc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS=str(a.threads))).returncode
                print(f"[{time.strftime('%H:%M:%S')}] {name} seed {seed}: rc {rc} in {time.time() - t0:.0f}s", flush=True)
    else:
        show(out, Path(a.save) if a.save else None)
        if a.figure: figure(out, Path(a.figure))

if __name__ == '__main__': main()
