"""VNC III -> Lucchi benchmark of MaskTwins against its ablations and the baselines (quality at an equal budget).

Subcommands
  cache      pre-downscale the real data into one small .npz (uint8) that can travel to another machine
  run        train + evaluate one (method, seed) and write <out>/<tag>.json (+ .npz example prediction for seed 0)
  batch      run a job list (quality table and/or ablations) in parallel sub-processes, skipping finished runs
  summarize  collect run JSONs into CSV/JSON tables and small PNG plots (learning curves, examples, loss terms)

  all        batch + summarize + speed: the one documented command

The one documented command (everything; resumable):
  python benchmarks/em_benchmark.py all --subsets 1 2 --seeds 0 1 2 3 4 --ablation-seeds 0 1 2 -j 2 --threads 1
(it runs `batch --jobs quality ablation` -- 7 methods x 5 seeds on subset 1 and the first 3 seeds on subset 2, the
ablations with 3 seeds --, then `summarize`, then `em_speed.py` and `fastai_overhead.py` (and on the CPU
`cpu_allocator.py`); finished runs are skipped, so an interrupted command continues where it stopped). On 2 CPU cores
`-j 2 --threads 1` keeps both cores busy; one MaskTwins run of the recipe takes about 13 minutes alone with 2 threads.
`--methods` restricts and orders the methods of a batch; `--jobs gate` adds MaskTwins with the consistency term gated
by the pseudo-label weight (`cm_gate='pl'`). On a GPU machine use e.g. `-j 8`.

Data: --data is the real data root (vnc3/ + lucchi/, default $MASKTWINS_DATA or ../shared/data) or a cache
written by `cache` (an .npz). Either way every volume is area-downscaled by --downscale (the recipe's 4) from its raw uint8
values, rounded to uint8 and then normalised per volume by `EMDomain`, so both give the same inputs.

The recipe (fixed before any run, identical for every method; see RECIPE) is the package's EM recipe
(`masktwins_nb.recipe.EM`, sized so that one MaskTwins run takes about 13 minutes on 2 CPU cores). The tables of the
first recipe (downscale 2, crop 128, 500 iterations, tau 0.968) are kept as results/em_prev_*; their JSON stores it. The reported score is always that of the final student; the test-set curves are for plotting
only (no model selection on them).
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run from a checkout without installing
from masktwins_nb.cpu import apply_cpu_env
apply_cpu_env()   # OpenMP threads and wait policy, before torch loads (cpu notebook)

# fixed in advance, identical across methods: the package's EM recipe (plus the inference tile)
from masktwins_nb.recipe import EM
from batch_runner import run_jobs, parse_set   # benchmarks/, the script's own folder
RECIPE = dict(EM.asdict(), tile=256)

# name -> (masktwins_learner method, overrides); 'oracle' also swaps the source for the labelled target-train volume
METHODS = dict(source_only=('source_only', {}), selftrain=('selftrain', {}), mic=('mic', {}),
               random_pair=('random_pair', {}), masktwins=('masktwins', {}),
               masktwins_nocm=('masktwins', dict(cm_weight=0.0)), masktwins_gated=('masktwins', dict(cm_gate='pl')),
               oracle=('source_only', {}))
QUALITY = ['source_only', 'selftrain', 'mic', 'random_pair', 'masktwins', 'masktwins_nocm', 'oracle']
# ablations of MaskTwins (complementary): mask ratio r of the first view (the second masks 1-r, so r and 1-r give
# the same pair distribution: r in {0.1, 0.3, 0.5} covers all of it) and block size relative to the 96 crop
ABLATION = [dict(ratio=0.1), dict(ratio=0.3), dict(block_size=12), dict(block_size=48)]
GATE = ['masktwins_gated']   # follow-up (not in the paper): consistency scaled by the pseudo-label weight, see 05_callbacks
EXAMPLE_SLICE = 21   # test slice stored as example prediction (seed 0 runs)

# ---------------------------------------------------------------- data
def _down(vol, f, mode):
    from masktwins_nb.data import rescale_stack
    if f == 1: return vol
    a = rescale_stack(vol, f, mode)
    return np.clip(np.round(a), 0, 255).astype(np.uint8) if mode == 'area' else a.astype(np.uint8)

def build_arrays(root, downscale:int=2)->dict:
    "Raw uint8 volumes from the real data root, downscaled (area for images, nearest for masks)"
    from masktwins_nb.data import read_stack, read_masks
    root = Path(root)
    src = dict(vnc3_img=read_stack(root/'vnc3'/'raw'), vnc3_mask=read_masks(root/'vnc3'/'mitochondria'))
    for s in ('training', 'testing'):
        src[f'lucchi_{s}_img'] = read_stack(root/'lucchi'/f'{s}.tif')
        src[f'lucchi_{s}_mask'] = read_masks(root/'lucchi'/f'{s}_groundtruth.tif')
    out = {k: _down(v.astype(np.uint8) if k.endswith('img') else v, downscale, 'area' if k.endswith('img') else 'nearest')
           for k, v in src.items()}
    out['downscale'] = np.array(downscale)
    return out

def load_arrays(data, downscale:int=2)->dict:
    "Arrays from a cache .npz (must match `downscale`) or from the real data root"
    if data is None:
        from masktwins_nb.data import data_root
        data = data_root()
        if data is None: raise SystemExit("no data: pass --data <root with vnc3/ and lucchi/> or a cache .npz")
    p = Path(data)
    if p.suffix == '.npz':
        a = dict(np.load(p))
        if int(a['downscale']) != downscale: raise SystemExit(f"{p} was made with downscale {int(a['downscale'])}, not {downscale}")
        return a
    return build_arrays(p, downscale)

def domains(arrs:dict, method:str, subset:int=1)->tuple:
    "(source, target_train unlabelled, target_test labelled) EMDomains; subset 2 swaps Lucchi training/testing"
    from masktwins_nb.data import EMDomain
    tr, te = ('training', 'testing') if subset == 1 else ('testing', 'training')
    tgt = EMDomain(arrs[f'lucchi_{tr}_img'], None, f'lucchi-{tr}')
    tst = EMDomain(arrs[f'lucchi_{te}_img'], arrs[f'lucchi_{te}_mask'], f'lucchi-{te}')
    if method == 'oracle': src = EMDomain(arrs[f'lucchi_{tr}_img'], arrs[f'lucchi_{tr}_mask'], f'lucchi-{tr} (labelled)')
    else: src = EMDomain(arrs['vnc3_img'], arrs['vnc3_mask'], 'vnc3')
    return src, tgt, tst

def run_tag(method, seed, subset=1, **abl)->str:
    a = ''.join(f"_{'r' if k == 'ratio' else 'b'}{v}" for k, v in sorted(abl.items()))
    return f"s{subset}_{method}{a}_seed{seed}"

# ---------------------------------------------------------------- one run
def run_one(method:str, seed:int, arrs:dict, out:Path, subset:int=1, device=None, threads:int|None=None,
            progress:bool=False, **overrides)->dict:
    "Train one (method, seed) as `train_job` does (`em_learner`, `fit_run`) on the arrays; score student and teacher"
    import torch
    from masktwins_nb.cpu import tune_cpu_allocator
    from masktwins_nb.run import fit_run, run_history
    from masktwins_nb.jobs import em_learner, score_model
    if threads: torch.set_num_threads(threads)
    lmethod, mo = METHODS[method]
    cfg = dict(RECIPE, **mo, **overrides)
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if dev.type == 'cpu': tune_cpu_allocator()   # as `masktwins_train` does (no effect on the numbers, only on speed)
    src, tgt, tst = domains(arrs, method, subset)
    recipe = EM.replace(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in EM.names() and k != 'method'},
                        method=lmethod)
    learn = em_learner(src, tgt, tst, recipe, seed, dev, downscale=1)   # the arrays come downscaled
    t0 = time.time()
    fit_run(learn, recipe, progress=progress)   # label-free scores per evaluation: ranked against IoU in `summarize`
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    secs = time.time() - t0
    _, evals = run_history(learn, missing=None)
    curve = [dict(iter=(i + 1) * cfg['eval_every'], **e) for i, e in enumerate(evals)]
    hist = list(getattr(getattr(learn, 'mask_twins', None), 'history', None) or [])   # none without `MaskTwins`
    losses = [float(l) for l in learn.recorder.losses]
    every = 5
    terms = [dict(h, loss=losses[h['iter']] if h['iter'] < len(losses) else None) for h in hist[::every]] if hist else \
            [dict(iter=i, loss=l) for i, l in enumerate(losses)][::every]
    t1 = time.time()
    student, prob = score_model(learn.model, tst, tile=cfg['tile'], device=dev, keep_prob=True)
    tm = getattr(getattr(learn, 'ema_teacher', None), 'teacher', None)
    teacher = None if tm is None else score_model(tm, tst, tile=cfg['tile'], device=dev)
    eval_secs = time.time() - t1
    tag = run_tag(method, seed, subset, **overrides)
    res = dict(tag=tag, method=method, learner_method=lmethod, seed=seed, subset=subset, ablation=overrides, config=cfg,
               device=str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == 'cuda' else f" ({torch.get_num_threads()} threads)"),
               train_seconds=round(secs, 2), eval_seconds=round(eval_secs, 2), iters=int(learn.train_iter),
               test=student, test_teacher=teacher, curve=curve, terms=terms,
               source=src.name, target=tgt.name, target_test=tst.name, n_test_slices=len(tst))
    out.mkdir(parents=True, exist_ok=True)
    if seed == 0 and not overrides:
        k = min(EXAMPLE_SLICE, len(prob) - 1)
        np.savez_compressed(out/f'{tag}_example.npz', prob=(prob[k] * 255).round().astype(np.uint8), slice=np.array(k))
    tmp = out/f'.{tag}.json.tmp'; tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, out/f'{tag}.json')
    return res

# ---------------------------------------------------------------- job lists
def job_list(jobs, seeds, subsets=(1,), ablation_seeds=None, methods=None, seeds2=None)->list:
    "Runs in order: per subset, seed by seed, the methods of the table (`methods`: only these, in this order)"
    js = []
    pick = lambda ms: [m for m in (methods or ms) if m in ms]
    for sub in subsets:
        ss = seeds if sub == 1 else (seeds2 or seeds[:3])   # subset 2: three seeds unless told otherwise
        if 'quality' in jobs: js += [dict(method=m, seed=s, subset=sub) for s in ss for m in pick(QUALITY)]
        if 'gate' in jobs: js += [dict(method=m, seed=s, subset=sub) for s in ss for m in pick(GATE)]
        if 'ablation' in jobs and sub == 1:
            js += [dict(method='masktwins', seed=s, subset=sub, **a) for s in (ablation_seeds or seeds[:2]) for a in ABLATION]
    return js

def _cmd(j, a):
    c = [sys.executable, str(Path(__file__).resolve()), 'run', '--method', j['method'], '--seed', str(j['seed']),
         '--subset', str(j['subset']), '--out', str(a.out), '--threads', str(a.threads), '--downscale', str(a.downscale)]
    if a.data: c += ['--data', str(a.data)]
    if a.iters: c += ['--iters', str(a.iters)]
    if a.device: c += ['--device', a.device]
    if a.set: c += ['--set', *a.set]
    for k in ('ratio', 'block_size'):
        if k in j: c += [f"--{k.replace('_', '-')}", str(j[k])]
    return c

def _tag(j)->str: return run_tag(j['method'], j['seed'], j['subset'], **{k: j[k] for k in ('ratio', 'block_size') if k in j})

def batch(a):
    out = Path(a.out)
    js = job_list(a.jobs, a.seeds, a.subsets, a.ablation_seeds, a.methods, a.seeds_subset2)
    todo = [j for j in js if not (out/(_tag(j) + '.json')).exists()]
    print(f"{len(js)} jobs, {len(js) - len(todo)} done already, running {len(todo)} with {a.j} workers", flush=True)
    return run_jobs(todo, lambda j: _cmd(j, a), _tag, out, a.threads, a.j, lambda j, r: r['test']['iou'])

# ---------------------------------------------------------------- summary
def _ms(v):
    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float('nan')

def summarize(a):
    import pandas as pd
    from masktwins_nb.selection import LabelFreeScores, spearman
    LABEL_FREE = LabelFreeScores.keys
    P = getattr(a, 'prefix', 'em')
    runs = [json.loads(p.read_text()) for p in sorted(Path(a.runs).glob('*.json'))]
    if not runs: raise SystemExit(f"no run JSONs in {a.runs}")
    res = Path(a.results); res.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in runs:
        abl = r.get('ablation') or {}
        rows.append(dict(tag=r['tag'], subset=r['subset'], method=r['method'], seed=r['seed'],
                         ratio=r['config']['ratio'], block_size=r['config']['block_size'], cm_weight=r['config']['cm_weight'],
                         ablation='main' if not abl else ','.join(f'{k}={v}' for k, v in sorted(abl.items())),
                         **{k: r['test'][k] for k in ('iou', 'f1', 'mcc', 'ap')},
                         **{f'teacher_{k}': (r['test_teacher'] or {}).get(k) for k in ('iou', 'f1', 'mcc', 'ap')},
                         final_pl_weight=np.mean([t['pl_weight'] for t in r['terms'][-10:]]) if 'pl_weight' in r['terms'][0] else None,
                         **{k: (r.get('curve') or [{}])[-1].get(k) for k in LABEL_FREE},
                         train_seconds=r['train_seconds'], iters=r['iters'], device=r['device']))
    df = pd.DataFrame(rows).sort_values(['subset', 'ablation', 'method', 'seed'])
    df.to_csv(res/f'{P}_runs.csv', index=False, float_format='%.5f')
    order = {m: i for i, m in enumerate(QUALITY)}
    summ = []
    for (sub, abl, m), g in df.groupby(['subset', 'ablation', 'method']):
        d = dict(subset=int(sub), ablation=abl, method=m, n_seeds=len(g), seeds=' '.join(map(str, sorted(g.seed))))
        for k in ('iou', 'f1', 'mcc', 'ap', 'teacher_iou', 'final_pl_weight', 'train_seconds'):
            vals = g[k].dropna()
            d[k + '_mean'], d[k + '_sd'] = _ms(vals) if len(vals) else (None, None)
        summ.append(d)
    sd = pd.DataFrame(summ)
    sd['_o'] = sd.method.map(order)
    sd = sd.sort_values(['subset', 'ablation', '_o']).drop(columns='_o')
    sd.to_csv(res/f'{P}_summary.csv', index=False, float_format='%.5f')
    lf = {k: spearman(g[k].values, g.iou.values) for k in LABEL_FREE
          for g in [df[[k, 'iou']].dropna()] if len(g) >= 3}   # over all runs that have the score
    if lf: print('Spearman rho of the final label-free scores with target IoU, all runs: '
                 + ', '.join(f'{k} {v:+.2f}' for k, v in lf.items()))
    pts = [c for r in runs for c in (r.get('curve') or []) if c.get('iou') is not None and c.get(LABEL_FREE[0]) is not None]
    lf_ck = {k: spearman([c[k] for c in pts], [c['iou'] for c in pts]) for k in LABEL_FREE} if len(pts) >= 3 else {}
    if lf_ck: print(f'... over all {len(pts)} checkpoints (every evaluation of every run): '
                    + ', '.join(f'{k} {v:+.2f}' for k, v in lf_ck.items()))
    pr = paired(df)
    pr.to_csv(res/f'{P}_paired.csv', index=False, float_format='%.5f')
    recipe = next((r['config'] for r in runs if r['method'] == 'source_only' and not r.get('ablation')), runs[0]['config'])
    recipe = dict(recipe, method='masktwins')   # the protocol these runs share (RECIPE, or RECIPE with --set overrides)
    (res/f'{P}_runs.json').write_text(json.dumps(_round(dict(recipe=recipe, runs=runs)), indent=None))
    (res/f'{P}_summary.json').write_text(json.dumps(dict(recipe=recipe, table=sd.to_dict('records'), label_free_spearman=lf,
                                                       label_free_spearman_checkpoints=dict(lf_ck, n=len(pts)),
                                                       paired=pr.to_dict('records')), indent=1))
    _plots(runs, res, Path(a.runs), P)
    print(table_text(sd))

def paired(df, against=('source_only', 'selftrain', 'random_pair'))->'pd.DataFrame':
    "Per-seed IoU differences of every method against `against` on the same subset and seeds: mean, sd, 95 % t-interval"
    import pandas as pd
    from scipy import stats
    rows = []
    for (sub, abl), g in df.groupby(['subset', 'ablation']):
        base_g = df[(df.subset == sub) & (df.ablation == 'main')]
        for ref in against:
            b = base_g[base_g.method == ref].set_index('seed').iou
            for m, gm in g.groupby('method'):
                if (m == ref and abl == 'main') or m == 'source_only': continue   # source-only: the other sign
                d = (gm.set_index('seed').iou - b).dropna()
                if not len(d): continue
                n, mu = len(d), float(d.mean())
                sdv = float(d.std(ddof=1)) if n > 1 else float('nan')
                h = float(stats.t.ppf(0.975, n - 1) * sdv / np.sqrt(n)) if n > 1 else float('nan')
                rows.append(dict(subset=int(sub), ablation=abl, method=m, against=ref, n_seeds=n,
                                 seeds=' '.join(map(str, sorted(d.index))), diff_mean=mu, diff_sd=sdv,
                                 ci95_low=mu - h, ci95_high=mu + h, n_ahead=int((d > 0).sum()), diff_min=float(d.min())))
    return pd.DataFrame(rows)

def _round(o, sig:int=5):
    "Floats rounded to `sig` significant digits (smaller JSON)"
    if isinstance(o, float): return float(f'{o:.{sig}g}')
    if isinstance(o, dict): return {k: _round(v, sig) for k, v in o.items()}
    if isinstance(o, list): return [_round(v, sig) for v in o]
    return o

def table_text(sd)->str:
    lines = []
    for (sub, abl), g in sd.groupby(['subset', 'ablation'], sort=False):
        lines.append(f"subset {sub}, {abl}:  method  IoU  F1  MCC  AP  (mean ± sd over seeds)")
        for _, r in g.iterrows():
            lines.append(f"  {r.method:<15} n={r.n_seeds}  " + '  '.join(
                f"{k.upper()} {r[k + '_mean']:.3f}±{r[k + '_sd']:.3f}" for k in ('iou', 'f1', 'mcc', 'ap')))
    return '\n'.join(lines)

def _plots(runs, res, rundir, P='em'):
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    main = [r for r in runs if not r.get('ablation') and r['subset'] == 1]
    # learning curves: test IoU vs iteration, mean over seeds (plotting only; no selection)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=72)
    for m in QUALITY:
        rs = [r for r in main if r['method'] == m and r['curve']]
        if not rs: continue
        k = next(k for k in ('foreground_iou', 'iou') if k in rs[0]['curve'][0])
        it = [c['iter'] for c in rs[0]['curve']]
        v = np.array([[c[k] for c in r['curve']] for r in rs if len(r['curve']) == len(it)])
        ax.errorbar(it, v.mean(0), yerr=v.std(0), label=m, capsize=2, lw=1, marker='o', ms=3)
    ax.set_xlabel('iteration'); ax.set_ylabel('test IoU (whole slices)'); ax.legend(fontsize=6); ax.set_title('VNC III → Lucchi, subset 1', fontsize=9)
    fig.tight_layout(); fig.savefig(res/f'{P}_curves.png', dpi=72); plt.close(fig)
    # pseudo-label weight and target loss terms over iterations (seed mean)
    fig, axs = plt.subplots(1, 3, figsize=(9, 2.6), dpi=72)
    for m in QUALITY:
        rs = [r for r in main if r['method'] == m and 'pl_weight' in r['terms'][0]]
        if not rs: continue
        n = min(len(r['terms']) for r in rs)
        it = [t['iter'] for t in rs[0]['terms'][:n]]
        for ax, k in zip(axs, ('pl_weight', 'tgt_ce', 'cm_mse')):
            ax.plot(it, np.mean([[t[k] for t in r['terms'][:n]] for r in rs], 0), label=m, lw=1)
    for ax, k in zip(axs, ('pl_weight', 'tgt_ce', 'cm_mse')): ax.set_title(k, fontsize=9); ax.set_xlabel('iteration')
    axs[0].legend(fontsize=6); fig.tight_layout(); fig.savefig(res/f'{P}_terms.png', dpi=72); plt.close(fig)
    # example predictions (seed 0, one test slice)
    ex = [(m, rundir/f's1_{m}_seed0_example.npz') for m in QUALITY]
    ex = [(m, p) for m, p in ex if p.exists()]
    if ex:
        try: arrs = load_arrays(getattr(_plots, 'data', None), runs[0]['config']['downscale'])   # image + truth panels
        except SystemExit: arrs = None   # no data here: predictions only
        n = len(ex) + (2 if arrs else 0)
        fig, axs = plt.subplots(1, n, figsize=(1.6 * n, 1.5), dpi=60, squeeze=False)
        axs = axs[0]
        i = 0
        if arrs:
            axs[0].imshow(arrs['lucchi_testing_img'][EXAMPLE_SLICE], cmap='gray'); axs[0].set_title('image', fontsize=7)
            axs[1].imshow(arrs['lucchi_testing_mask'][EXAMPLE_SLICE], cmap='magma'); axs[1].set_title('truth', fontsize=7); i = 2
        for m, p in ex:
            axs[i].imshow(np.load(p)['prob'] >= 128, cmap='magma'); axs[i].set_title(m, fontsize=7); i += 1
        for ax in axs: ax.axis('off')
        fig.tight_layout(); fig.savefig(res/f'{P}_examples.png', dpi=60); plt.close(fig)

# ---------------------------------------------------------------- CLI
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest='cmd', required=True)
    c = sp.add_parser('cache', help='write the pre-downscaled uint8 cache (.npz) from the real data root')
    c.add_argument('--data', default=None, help='real data root (vnc3/, lucchi/); default $MASKTWINS_DATA or ../shared/data')
    c.add_argument('--downscale', type=int, default=RECIPE['downscale'])
    c.add_argument('--dest', default=None, help='default: .devdata/em_ds<downscale>.npz in the checkout')
    for name in ('run', 'batch', 'all'):
        q = sp.add_parser(name, help=dict(run='train+evaluate one run', batch='run many jobs in parallel processes',
                                          all='batch, then summarize, then the speed benchmark')[name])
        q.add_argument('--data', default=None, help='real data root or cache .npz (default: real root)')
        q.add_argument('--out', default='runs/em', help='folder for the run JSONs')
        q.add_argument('--downscale', type=int, default=RECIPE['downscale'])
        q.add_argument('--iters', type=int, default=None, help=f"override the recipe's {RECIPE['iters']} iterations (smoke tests only)")
        q.add_argument('--device', default=None, help='cpu, cuda (default: cuda if available)')
        q.add_argument('--threads', type=int, default=2, help='torch CPU threads per run')
        q.add_argument('--set', nargs='+', default=None, metavar='KEY=VALUE',
                       help='recipe overrides for a larger protocol, e.g. crop=256 iters=3000 (kept in each run JSON)')
        if name == 'run':
            q.add_argument('--method', required=True, choices=list(METHODS))
            q.add_argument('--seed', type=int, default=0)
            q.add_argument('--subset', type=int, default=1, choices=(1, 2))
            q.add_argument('--ratio', type=float, default=None, help='ablation: mask ratio of the first view')
            q.add_argument('--block-size', type=int, default=None, help='ablation: mask block size (pixels)')
            q.add_argument('--progress', action='store_true')
        else:
            q.add_argument('--jobs', nargs='+', default=['quality'] if name == 'batch' else ['quality', 'ablation'],
                           choices=('quality', 'ablation', 'gate'))
            q.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
            q.add_argument('--seeds-subset2', type=int, nargs='+', default=None, help='default: the first three --seeds')
            q.add_argument('--ablation-seeds', type=int, nargs='+', default=None, help='default: the first two --seeds')
            q.add_argument('--subsets', type=int, nargs='+', default=[1], choices=(1, 2))
            q.add_argument('--methods', nargs='+', default=None, choices=list(METHODS),
                           help='only these methods of the quality/gate jobs, in this order (default: all)')
            q.add_argument('-j', type=int, default=4, help='parallel runs')
            if name == 'all':
                q.add_argument('--results', default=str(REPO/'benchmarks'/'results'), help='where tables, plots and speed JSON go')
                q.add_argument('--no-speed', action='store_true', help='skip em_speed.py')
    s = sp.add_parser('summarize', help='tables (CSV/JSON) and plots from the run JSONs')
    s.add_argument('--runs', default='runs/em'); s.add_argument('--results', default=str(REPO/'benchmarks'/'results'))
    s.add_argument('--data', default=None, help='real root or cache, for the example image/truth panels (optional)')
    s.add_argument('--prefix', default='em', help='file-name prefix of the tables and plots (e.g. em_gpu for a larger protocol)')
    a = p.parse_args(argv)
    if a.cmd == 'cache':
        arrs = load_arrays(a.data, a.downscale)
        a.dest = a.dest or str(REPO/'.devdata'/f'em_ds{a.downscale}.npz')
        Path(a.dest).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(a.dest, **arrs)
        print(a.dest, {k: v.shape for k, v in arrs.items()}, f"{Path(a.dest).stat().st_size/2**20:.1f} MiB")
    elif a.cmd == 'run':
        RECIPE['downscale'] = a.downscale   # the data's (arrays come pre-downscaled), recorded with the run
        if a.set: RECIPE.update(parse_set(a.set, RECIPE))
        if a.iters: RECIPE['iters'] = a.iters; RECIPE['eval_every'] = min(RECIPE['eval_every'], a.iters)
        ov = {k: v for k, v in dict(ratio=a.ratio, block_size=a.block_size).items() if v is not None}
        r = run_one(a.method, a.seed, load_arrays(a.data, a.downscale), Path(a.out), a.subset, a.device, a.threads, a.progress, **ov)
        print(json.dumps(dict(tag=r['tag'], test=r['test'], teacher=r['test_teacher'], train_seconds=r['train_seconds'])))
    elif a.cmd == 'batch': return batch(a)
    elif a.cmd == 'all':
        rc = batch(a)
        a.runs = a.out; _plots.data = a.data
        summarize(a)
        if not a.no_speed:
            import torch
            dev = a.device or ('cuda' if torch.cuda.is_available() else 'cpu')
            c = [sys.executable, str(REPO/'benchmarks'/'em_speed.py'), '--device', dev, '--out', str(Path(a.results)/f'em_speed_{dev}.json')]
            if a.data: c += ['--data', str(a.data)]
            rc = subprocess.run(c).returncode or rc
            c = [sys.executable, str(REPO/'benchmarks'/'fastai_overhead.py'), '--device', dev, '--out', str(Path(a.results)/f'fastai_overhead_{dev}.json')]
            if a.data: c += ['--data', str(a.data)]
            rc = subprocess.run(c).returncode or rc
            if dev == 'cpu':   # glibc's default allocator against `tune_cpu_allocator`, in alternating processes
                c = [sys.executable, str(REPO/'benchmarks'/'cpu_allocator.py'), '--out', str(Path(a.results)/'cpu_allocator.json')]
                if a.data: c += ['--data', str(a.data)]
                rc = subprocess.run(c).returncode or rc
        return rc
    else:
        _plots.data = a.data
        summarize(a)

if __name__ == '__main__': sys.exit(main())
