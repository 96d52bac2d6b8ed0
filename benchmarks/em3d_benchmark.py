"""3-D benchmark: VNC III -> Lucchi in volumes (source-only vs MaskTwins 3-D, with the 2-D EM recipe scored on the
same test volume beside them), and synapse detection on held-out VNC III sections.

Subcommands
  run        one job -> <out>/<tag>.json (a 3-D or 2-D training run keeps its run folder <out>/<tag>/, so an
             interrupted run continues from its last checkpoint when started again)
  batch      the job list, one sub-process per job (-j parallel), skipping jobs whose JSON exists: resumable
  prepare    the seg3d inputs in one file (--data of seg3d jobs on a machine without the data folders)
  summarize  tables from the JSONs -> benchmarks/results/em3d_summary.json and a text table (--carry: the rows of
             kinds with no JSONs in --out come from an earlier summary, marked with its name)

Jobs (tags)
  seg3d_<method>_seed<s>    `masktwins_train --dims 3` (recipe EM3D) on VNC III (50 x 4.6 x 4.6 nm, given) -> lucchi3d
                            (5 x 10 x 10 nm, given), both resampled to 50 x 20 x 20 nm; scored over the whole lucchi3d
                            test volume at its own voxel size (165 x 384 x 512)
  seg2d_<method>_seed<s>    the 2-D EM recipe (`masktwins_train`, VNC III -> lucchi/), then scored slice by slice on the
                            same lucchi3d test volume (all 165 slices, in-plane at the recipe's 20 nm, probabilities
                            brought back to 10 nm) with the same labels
  detect_<method>_fold<f>_seed<s>  VNC III synapses (points: centroids of the 3-D components of synapses/), 3-D detector
                            (06b_synapses) trained on sections 0-9 and scored on 10-19 (fold 0), or the reverse (fold 1),
                            at the detection threshold chosen on the training sections;
                            methods: source_only, masktwins (target: the held-out sections, unlabelled) and
                            masktwins_lucchi (target: the lucchi3d training volume, unlabelled)

The commands (2 CPU cores; the lead schedules the long ones):
  python benchmarks/em3d_benchmark.py batch --jobs seg3d seg2d --seeds 0 1 2 --threads 2 -j 1
  python benchmarks/em3d_benchmark.py batch --jobs detect --seeds 0 --threads 2 -j 1
  python benchmarks/em3d_benchmark.py summarize
A smoke test of every job kind (a few iterations, a throw-away folder):
  python benchmarks/em3d_benchmark.py batch --jobs seg3d seg2d detect --seeds 0 --iters 4 --out runs/em3d_smoke

Budget (fixed in advance): the EM3D recipe (800 iterations), the EM recipe for 2-D (600 iterations), detection
DETECT below. Test labels are used for the final scores only; no checkpoint or setting is chosen on them.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run from a checkout without installing
from masktwins_nb.cpu import apply_cpu_env
apply_cpu_env()   # OpenMP threads and wait policy, before torch loads

from masktwins_nb.recipe import EM, EM3D
from batch_runner import run_jobs, parse_set   # benchmarks/, the script's own folder
VNC_SPACING, LUCCHI3D_SPACING = (50., 4.6, 4.6), (5., 10., 10.)   # nm, (z, y, x): the data README
LUCCHI_2D_PIXEL = 5. * EM.downscale   # the 2-D recipe's pixel on Lucchi (5 nm x downscale), nm
DETECT = dict(iters=400, eval_every=200, radius=80., max_dist=150., nms=150., fg_weight=10.)   # budget, distances (nm), weight
FOLDS = {0: (slice(0, 10), slice(10, 20)), 1: (slice(10, 20), slice(0, 10))}   # (train, held-out) sections of VNC III
SEG_METHODS, DET_METHODS = ('source_only', 'masktwins'), ('source_only', 'masktwins', 'masktwins_lucchi')

def _root(data):
    from masktwins_nb.data import data_root
    r = Path(data) if data else data_root()
    if r is None or not (r/'vnc3').is_dir() or not (r/'lucchi3d').is_dir():
        raise SystemExit("no data: pass --data <root with vnc3/, lucchi/ and lucchi3d/> (or set MASKTWINS_DATA)")
    return r

def _save(res:dict, out:Path, tag:str):
    out.mkdir(parents=True, exist_ok=True)
    tmp = out/f'.{tag}.json.tmp'; tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, out/f'{tag}.json')

def _folder(out:Path, tag:str)->dict:
    "Run-folder arguments: continue an interrupted run, start a fresh one otherwise"
    f = out/tag
    return dict(out=str(f), resume=(f/'model.interrupted.pth').exists() or (f/'model.pth').exists())

# ---------------------------------------------------------------- jobs
SEG3D_VOXEL = (EM3D.voxel_z, EM3D.voxel_xy, EM3D.voxel_xy)   # the common voxel size, nm

def prepare(a):
    """The 3-D segmentation inputs in one file (VNC III and the lucchi3d training volume at the common voxel size, the
    test volume as it is on disk): what a machine without the data folders needs for `seg3d`"""
    from masktwins_nb.learner3d import load_volume, Volume
    from masktwins_nb.data import read_stack, read_masks
    root = _root(a.data)
    src = load_volume(root/'vnc3', 'train', VNC_SPACING).resample(SEG3D_VOXEL)
    tgt = load_volume(root/'lucchi3d', 'train', LUCCHI3D_SPACING, labels=False).resample(SEG3D_VOXEL)
    img, msk = read_stack(root/'lucchi3d'/'testing.tif'), read_masks(root/'lucchi3d'/'testing_groundtruth.tif')
    tst = load_volume(root/'lucchi3d', 'test', LUCCHI3D_SPACING)
    assert np.array_equal(Volume(img, msk, LUCCHI3D_SPACING).images, tst.images) and np.array_equal(msk, tst.masks)
    np.savez_compressed(a.dest, src_images=src.images, src_masks=src.masks, tgt_images=tgt.images, test_images=img,
                        test_masks=msk, voxel=np.array(SEG3D_VOXEL), test_spacing=np.array(LUCCHI3D_SPACING))
    print(f"{a.dest}: {Path(a.dest).stat().st_size / 2**20:.1f} MiB ({src}, {tgt}, {tst})")

def seg3d_inputs(data, root=None)->tuple:
    "(source, target, test, extra train_job3d arguments): folders, or the volumes of a `prepare` file"
    if data is None or not str(data).endswith('.npz'):
        return (str(root/'vnc3'), str(root/'lucchi3d'), None,
                dict(source_spacing=VNC_SPACING, target_spacing=LUCCHI3D_SPACING))
    from masktwins_nb.learner3d import Volume
    d = np.load(data)
    vox, sp = tuple(d['voxel'].tolist()), tuple(d['test_spacing'].tolist())
    return (Volume(d['src_images'], d['src_masks'], vox, 'vnc3', norm=False),
            Volume(d['tgt_images'], None, vox, 'lucchi3d-train', norm=False),
            Volume(d['test_images'], d['test_masks'], sp, 'lucchi3d-test'), {})

def seg3d(method, seed, root, out, iters=None, device='cpu', data=None, overrides=None)->dict:
    from masktwins_nb.cli3d import train_job3d
    tag = f'seg3d_{method}_seed{seed}'
    kw = dict(overrides or {})
    if iters: kw.update(iters=iters, eval_every=min(kw.get('eval_every', EM3D.eval_every), iters))
    src, tgt, tst, sp = seg3d_inputs(data, root)
    r = train_job3d(src, tgt, tst, recipe=EM3D, method=method, seed=seed, device=device, progress=True,
                    **sp, **_folder(out, tag), **kw)
    return dict(tag=tag, kind='seg3d', method=method, seed=seed, test=r['target_test'], train_seconds=r['seconds'],
                iters=r['iters'], evaluations=r['evaluations'], config=r['config'], device=device,
                inputs='folders' if tst is None else 'prepare file (the same volumes, resampled in advance)',
                overrides=kw,
                test_volume=f"lucchi3d/testing.tif, {'x'.join(map(str, r['config']['shapes']['target_test_native']))} voxels")

def seg2d(method, seed, root, out, iters=None, device='cpu')->dict:
    "The 2-D EM recipe, trained as `masktwins_train` does, then scored on the whole lucchi3d test volume"
    import torch
    from masktwins_nb.jobs import train_job, load_model
    from masktwins_nb.data import read_stack, read_masks, rescale_stack, normalize
    from masktwins_nb.inference import predict_volume
    from masktwins_nb.metrics import binary_scores
    tag = f'seg2d_{method}_seed{seed}'
    kw = dict(iters=iters, eval_every=min(EM.eval_every, iters)) if iters else {}
    r = train_job(str(root/'vnc3'), str(root/'lucchi'), recipe=EM, method=method, seed=seed, device=device, progress=True,
                  **_folder(out, tag), **kw)
    model, meta = load_model(out/tag/'model.pth', device=device)
    img, truth = read_stack(root/'lucchi3d'/'testing.tif'), read_masks(root/'lucchi3d'/'testing_groundtruth.tif')
    f = LUCCHI_2D_PIXEL / LUCCHI3D_SPACING[1]   # lucchi3d (10 nm) to the recipe's pixel (20 nm)
    t0 = time.time()
    prob = predict_volume(model, normalize(rescale_stack(img.astype(np.float32), f, 'area')), tile=256, progress=False)
    prob = torch.nn.functional.interpolate(torch.from_numpy(prob)[:, None], size=img.shape[1:], mode='bilinear',
                                           align_corners=False)[:, 0].numpy()
    test = {k: float(v) for k, v in binary_scores(prob, truth).items()}
    return dict(tag=tag, kind='seg2d', method=method, seed=seed, test=test, test_lucchi2d=r['target_test'],
                train_seconds=r['seconds'], eval_seconds=round(time.time() - t0, 1), iters=r['iters'], config=r['config'],
                test_volume=f"lucchi3d/testing.tif, {'x'.join(map(str, truth.shape))} voxels (slice by slice)")

def detect(method, seed, fold, root, out, iters=None, device='cpu', progress=True)->dict:
    from masktwins_nb.learner3d import load_volume
    from masktwins_nb.synapses import detection_run
    tag = f'detect_{method}_fold{fold}_seed{seed}'
    vol = load_volume(root/'vnc3'/'raw', spacing=VNC_SPACING, mask_path=root/'vnc3'/'synapses', name='vnc3-synapses')
    target = None
    if method == 'masktwins_lucchi': target = load_volume(root/'lucchi3d', 'train', LUCCHI3D_SPACING, labels=False)
    d = dict(DETECT, **(dict(iters=iters, eval_every=min(DETECT['eval_every'], iters)) if iters else {}))
    train, test = FOLDS[fold]
    r = detection_run(vol, train, test, target, EM3D, seed, radius=d['radius'], max_dist=d['max_dist'], nms=d['nms'],
                      fg_weight=d['fg_weight'],
                      device=device, progress=progress, method='source_only' if method == 'source_only' else 'masktwins',
                      iters=d['iters'], eval_every=d['eval_every'])
    return dict(r, tag=tag, kind='detect', method=method, fold=fold)

def run(a)->dict:
    import torch
    torch.set_num_threads(a.threads)
    prepared = a.kind == 'seg3d' and str(a.data).endswith('.npz')
    root, out = (None if prepared else _root(a.data)), Path(a.out)
    if a.kind == 'seg3d': res = seg3d(a.method, a.seed, root, out, a.iters, a.device, a.data, parse_set(a.set, EM3D.asdict()))
    elif a.kind == 'seg2d': res = seg2d(a.method, a.seed, root, out, a.iters, a.device)
    else: res = detect(a.method, a.seed, a.fold, root, out, a.iters, a.device)
    res['threads'] = a.threads
    _save(res, out, res['tag'])
    return res

# ---------------------------------------------------------------- batch
def job_list(kinds, seeds, folds=(0, 1), methods=None)->list:
    "Jobs in order: seed by seed, 3-D then 2-D segmentation, then detection fold by fold (`methods`: only these)"
    js = []
    for s in seeds:
        if 'seg3d' in kinds: js += [dict(kind='seg3d', method=m, seed=s, tag=f'seg3d_{m}_seed{s}') for m in SEG_METHODS]
        if 'seg2d' in kinds: js += [dict(kind='seg2d', method=m, seed=s, tag=f'seg2d_{m}_seed{s}') for m in SEG_METHODS]
        if 'detect' in kinds:
            js += [dict(kind='detect', method=m, seed=s, fold=f, tag=f'detect_{m}_fold{f}_seed{s}') for f in folds
                   for m in DET_METHODS]
    return [j for j in js if methods is None or j['method'] in methods]

def batch(a)->int:
    out = Path(a.out)
    js = job_list(a.jobs, a.seeds, a.folds, a.methods)
    todo = [j for j in js if not (out/f"{j['tag']}.json").exists()]
    print(f"{len(js)} jobs, {len(js) - len(todo)} done already, running {len(todo)} with {a.j} workers", flush=True)
    def cmd(j):
        c = [sys.executable, str(Path(__file__).resolve()), 'run', '--kind', j['kind'], '--method', j['method'],
             '--seed', str(j['seed']), '--fold', str(j.get('fold', 0)), '--out', str(out), '--threads', str(a.threads),
             '--device', a.device]
        c += ['--set', *a.set] if a.set else []
        return c + (['--data', str(a.data)] if a.data else []) + (['--iters', str(a.iters)] if a.iters else [])
    msg = lambda j, r: f"F1 {r['scores']['f1']:.3f}" if j['kind'] == 'detect' else f"IoU {r['test']['iou']:.3f}"
    return run_jobs(todo, cmd, lambda j: j['tag'], out, a.threads, a.j, msg, log_mode='a')   # 'a': runs resume

# ---------------------------------------------------------------- summary
def _ms(v):
    v = np.asarray(v, float)
    return (float(v.mean()) if len(v) else float('nan')), (float(v.std(ddof=1)) if len(v) > 1 else float('nan'))

def _carry(path, table, paired)->dict:
    """Take the segmentation rows and paired differences of kinds that have no run JSONs here from an earlier summary
    (for the 2-D rows when only the 3-D runs were repeated: the 2-D training code is unchanged, its regression pins
    pass); the rows are marked with the file they came from"""
    old = json.loads(Path(path).read_text())
    have = {(r['model'], r['method']) for r in table}
    rows = [dict(r, carried_from=str(path)) for r in old['segmentation'] if (r['model'], r['method']) not in have]
    kinds = {p['model'] for p in paired}
    pairs = [dict(p, carried_from=str(path)) for p in old['paired_iou'] if p['model'] not in kinds]
    table += rows; paired += pairs
    return dict(file=str(path), rows=[f"{r['model']} {r['method']}" for r in rows], paired=[p['model'] for p in pairs])

def summarize(a)->dict:
    runs = [json.loads(p.read_text()) for p in sorted(Path(a.out).glob('*.json'))]
    if not runs: raise SystemExit(f"no run JSONs in {a.out}")
    seg = [r for r in runs if r['kind'] in ('seg3d', 'seg2d')]
    table = []
    for kind in ('seg3d', 'seg2d'):
        for m in SEG_METHODS:
            rs = sorted((r for r in seg if r['kind'] == kind and r['method'] == m), key=lambda r: r['seed'])
            if not rs: continue
            row = dict(model='3-D' if kind == 'seg3d' else '2-D', method=m, n_seeds=len(rs), seeds=[r['seed'] for r in rs],
                       iters=rs[0]['iters'], train_seconds=_ms([r['train_seconds'] for r in rs])[0],
                       train_seconds_max=max(r['train_seconds'] for r in rs),
                       devices=sorted({str(r.get('device', r['config'].get('device'))) for r in rs}))
            for k in ('iou', 'f1', 'mcc', 'ap'): row[k + '_mean'], row[k + '_sd'] = _ms([r['test'][k] for r in rs])
            if kind == 'seg3d':   # target AP at each evaluation during training, mean over seeds
                row['eval_ap'] = [float(np.mean([r['evaluations'][i]['ap'] for r in rs]))
                                  for i in range(min(len(r['evaluations']) for r in rs))]
            table.append(row)
    paired = []
    for kind in ('seg3d', 'seg2d'):
        so = {r['seed']: r['test']['iou'] for r in seg if r['kind'] == kind and r['method'] == 'source_only'}
        mt = {r['seed']: r['test']['iou'] for r in seg if r['kind'] == kind and r['method'] == 'masktwins'}
        d = [mt[s] - so[s] for s in sorted(set(so) & set(mt))]
        if d: paired.append(dict(model=kind, seeds=sorted(set(so) & set(mt)), iou_diff=d, mean=_ms(d)[0], n_ahead=int(sum(x > 0 for x in d))))
    carried = _carry(a.carry, table, paired) if a.carry else None
    det = []
    for m in DET_METHODS:
        rs = [r for r in runs if r['kind'] == 'detect' and r['method'] == m]
        if not rs: continue
        tp, fp, fn = (sum(r['scores'][k] for r in rs) for k in ('tp', 'fp', 'fn'))
        det.append(dict(method=m, runs=[dict(fold=r['fold'], seed=r['seed'], n_true=r['n_true'], n_pred=r['n_pred'],
                                             threshold=r['threshold'], f1_at_05=r['scores_at_05']['f1'],
                                             **{k: r['scores'][k] for k in ('tp', 'fp', 'fn', 'precision', 'recall', 'f1')})
                                        for r in sorted(rs, key=lambda r: (r['seed'], r['fold']))],
                        pooled_f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float('nan'), tp=tp, fp=fp, fn=fn,
                        f1_mean=_ms([r['scores']['f1'] for r in rs])[0], iters=rs[0]['config']['iters'],
                        max_dist_nm=rs[0]['max_dist'], radius_nm=rs[0]['radius']))
    res = dict(segmentation=table, paired_iou=paired, detection=det,
               protocol=dict(voxel_nm=[EM3D.voxel_z, EM3D.voxel_xy, EM3D.voxel_xy], em3d=EM3D.asdict(), detect=DETECT,
                             seg3d_overrides=sorted({json.dumps(r.get('overrides', {}), sort_keys=True) for r in seg
                                                     if r['kind'] == 'seg3d'}),
                             folds={k: [[v[0].start, v[0].stop], [v[1].start, v[1].stop]] for k, v in FOLDS.items()},
                             carried=carried))
    dest = Path(a.results); dest.mkdir(parents=True, exist_ok=True)
    (dest/f'{a.prefix}_summary.json').write_text(json.dumps(res, indent=1))
    lines = ["VNC III -> Lucchi, whole lucchi3d test volume (165 x 384 x 512), mean ± sd over seeds",
             f"  {'model':<5} {'method':<12} {'n':>2}  {'IoU':>13} {'F1':>13} {'MCC':>13} {'AP':>13}  iters  device"]
    for r in table:
        lines.append(f"  {r['model']:<5} {r['method']:<12} {r['n_seeds']:>2}  " +
                     ' '.join(f"{r[k + '_mean']:.3f} ± {r[k + '_sd']:.3f}" for k in ('iou', 'f1', 'mcc', 'ap')) +
                     f"  {r['iters']:>5}  {'/'.join(r['devices'])}" + ('  (carried)' if r.get('carried_from') else ''))
    for p in paired: lines.append(f"  {p['model']}: MaskTwins - source-only IoU per seed {[round(x, 3) for x in p['iou_diff']]}")
    if det:
        lines.append("VNC III synapse detection, held-out sections (fold 0: train 0-9 / test 10-19; fold 1: the reverse)")
        for d in det:
            lines.append(f"  {d['method']:<17} pooled F1 {d['pooled_f1']:.3f} (tp {d['tp']}, fp {d['fp']}, fn {d['fn']}); per run " +
                         ', '.join(f"f{r['fold']}s{r['seed']} {r['f1']:.3f} (thr {r['threshold']}, {r['n_pred']} found / {r['n_true']})"
                                   for r in d['runs']))
    (dest/f'{a.prefix}_summary.txt').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return res

# ---------------------------------------------------------------- CLI
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest='cmd', required=True)
    for name in ('run', 'batch'):
        q = sp.add_parser(name)
        q.add_argument('--data', default=None, help='data root with vnc3/, lucchi/, lucchi3d/ (default $MASKTWINS_DATA or ../shared/data); for seg3d also a prepare file')
        q.add_argument('--out', default='runs/em3d', help='folder for run JSONs and run folders')
        q.add_argument('--iters', type=int, default=None, help='override the iterations (smoke tests only)')
        q.add_argument('--device', default='cpu')
        q.add_argument('--threads', type=int, default=2, help='torch CPU threads per run')
        q.add_argument('--set', nargs='+', default=None, metavar='KEY=VALUE', help='EM3D recipe changes (seg3d only)')
        if name == 'run':
            q.add_argument('--kind', required=True, choices=('seg3d', 'seg2d', 'detect'))
            q.add_argument('--method', required=True, choices=DET_METHODS)
            q.add_argument('--seed', type=int, default=0)
            q.add_argument('--fold', type=int, default=0, choices=(0, 1))
        else:
            q.add_argument('--jobs', nargs='+', default=['seg3d', 'seg2d'], choices=('seg3d', 'seg2d', 'detect'))
            q.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
            q.add_argument('--folds', type=int, nargs='+', default=[0, 1], choices=(0, 1))
            q.add_argument('--methods', nargs='+', default=None, choices=DET_METHODS, help='only these methods (default: all)')
            q.add_argument('-j', type=int, default=1, help='parallel runs')
    q = sp.add_parser('prepare')
    q.add_argument('--data', default=None, help='data root with vnc3/ and lucchi3d/')
    q.add_argument('--dest', default='em3d_seg.npz', help='the file to write (--data of seg3d jobs)')
    s = sp.add_parser('summarize')
    s.add_argument('--out', default='runs/em3d'); s.add_argument('--results', default=str(REPO/'benchmarks'/'results'))
    s.add_argument('--prefix', default='em3d', help='result files <prefix>_summary.json/.txt')
    s.add_argument('--carry', default=None, help='an earlier summary JSON: its rows of kinds with no run JSONs in --out')
    a = p.parse_args(argv)
    if a.cmd == 'run':
        if a.kind != 'detect' and a.method == 'masktwins_lucchi': raise SystemExit("masktwins_lucchi is a detection method")
        r = run(a)
        print(json.dumps(dict(tag=r['tag'], **({'scores': r['scores']} if a.kind == 'detect' else {'test': r['test']}))))
    elif a.cmd == 'batch': return batch(a)
    elif a.cmd == 'prepare': prepare(a)
    else: summarize(a)
    return 0

if __name__ == '__main__': sys.exit(main())
