"""The command line's recipe on real data, over seeds: source-only, MaskTwins with the paper's loss, and MaskTwins with the
consistency term gated by the pseudo-label weight (`cm_gate='pl'`, the CLI's default on data).

Every run is `train_job` (what `masktwins_train --source ... --target ...` runs) with one fixed CPU-sized recipe, chosen
before any of these runs: 300 iterations, downscale 4, crop 96, mask blocks 24 (a quarter of the crop), everything else
the CLI's data defaults. Adaptation on Lucchi `training.tif` without labels, scores on all `testing` slices. Finished runs
(a metrics.json in --runs) are skipped, so an interrupted command continues where it stopped.

  python benchmarks/cli_gate.py --seeds 0 1 2 --runs runs/cli_gate --out benchmarks/results/cli_gate.json

--iters / --eval_every change the budget (everything else stays the recipe above), e.g. the 3,000-iteration study:

  python benchmarks/cli_gate.py --seeds 0 --iters 3000 --eval_every 500 --runs runs/cli_gate_3000 \
      --out benchmarks/results/cli_gate_3000.json
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from masktwins_nb.cpu import apply_cpu_env
apply_cpu_env()   # OpenMP threads and wait policy, before torch loads (cpu notebook)
RECIPE = dict(iters=300, eval_every=100, downscale=4, crop=96, block_size=24)
VARIANTS = {'source_only': dict(method='source_only'), 'masktwins': dict(method='masktwins', cm_gate='none'),
            'masktwins_gated': dict(method='masktwins', cm_gate='pl')}
KEYS = ('iou', 'f1', 'mcc', 'ap')

def run(name, seed, data, runs, threads, recipe=RECIPE):
    import torch
    from masktwins_nb.jobs import train_job
    out = Path(runs)/f'{name}_s{seed}'
    if (out/'metrics.json').exists(): return json.loads((out/'metrics.json').read_text())
    torch.set_num_threads(threads)
    return train_job(source=str(Path(data)/'vnc3'), target=str(Path(data)/'lucchi'), seed=seed, device='cpu', out=str(out),
                     progress=False, resume=True, **recipe, **VARIANTS[name])   # resume: an interrupted run continues

def late_terms(out, share=0.1)->dict:
    "Label-free training signals: each loss term of history.csv averaged over the last `share` of the iterations"
    f = Path(out)/'history.csv'
    if not f.exists(): return {}
    lines = f.read_text().splitlines(); keys = lines[0].split(',')
    rows = [dict(zip(keys, l.split(','))) for l in lines[1:]]
    late = rows[int(len(rows) * (1 - share)):]
    return {k: float(np.mean([float(r[k]) for r in late if r[k] != ''])) for k in keys if k != 'iter' and any(r[k] for r in late)}

def summary(rows):
    out = {}
    for name in VARIANTS:
        rs = [r for r in rows if r['variant'] == name]
        if rs: out[name] = dict(n_seeds=len(rs), **{f'{k}_{s}': float(f([r['target_test'][k] for r in rs]))
                                                    for k in KEYS for s, f in (('mean', np.mean), ('sd', lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.))})
    return out

def table(res)->str:
    L = [f"recipe {res['recipe']}; mean ± sd over seeds {res['seeds']} (target test, all slices)",
         f"{'variant':<17}" + ''.join(f'{k.upper():>16}' for k in KEYS) + '   per seed IoU']
    for name, s in res['summary'].items():
        per = [round(r['target_test']['iou'], 3) for r in res['runs'] if r['variant'] == name]
        L.append(f"{name:<17}" + ''.join(f"{s[k + '_mean']:9.3f} ± {s[k + '_sd']:.3f}" for k in KEYS) + f"   {per}")
    return '\n'.join(L)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None, help='real data root with vnc3/ and lucchi/ (default: $MASKTWINS_DATA or ../shared/data)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--iters', type=int, default=None, help=f"training iterations (default {RECIPE['iters']})")
    p.add_argument('--eval_every', type=int, default=None, help=f"iterations between evaluations (default {RECIPE['eval_every']})")
    p.add_argument('--runs', default='runs/cli_gate', help='one folder per run (checkpoint, metrics, history, curves)')
    p.add_argument('--out', default=None, help='JSON file for all results')
    a = p.parse_args(argv)
    from masktwins_nb.data import data_root
    data = a.data or data_root()
    if data is None: raise SystemExit('no data: pass --data or set MASKTWINS_DATA')
    recipe = dict(RECIPE, **{k: v for k, v in dict(iters=a.iters, eval_every=a.eval_every).items() if v is not None})
    rows = []
    for seed in a.seeds:
        for name in a.variants:
            r = run(name, seed, data, a.runs, a.threads, recipe)
            rows.append(dict(variant=name, seed=seed, target_test=r['target_test'], seconds=r['seconds'], evaluations=r['evaluations'],
                             late_terms=late_terms(Path(a.runs)/f'{name}_s{seed}')))
            print(f"{name:<17} seed {seed}: IoU {r['target_test']['iou']:.3f}  ({r['seconds']:.0f} s)", flush=True)
    res = dict(recipe=recipe, seeds=a.seeds, runs=rows, summary=summary(rows))
    print(table(res))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__': main()
