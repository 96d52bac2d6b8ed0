"""Side-by-side speed of MaskTwins, its ablations and the baselines at the benchmark's budget (one process, one run).

Measures, all in this one process with the same model size / crop / batch as `em_benchmark.RECIPE`:
  * seconds per training step of every method through fastai (`masktwins_learner` + `fit_one_cycle`), median over
    --n timed steps after --warmup, and the ratio to source_only; also the whole iteration (with data loading);
  * the MaskTwins step against the sum of its passes timed alone in plain PyTorch (source fwd+bwd, teacher fwd,
    two masked views fwd+bwd; then + optimiser/EMA + augmentation/masks);
  * the fastai-callback step against a plain PyTorch loop doing the same computation (two separate loops, timed once
    each: on a CPU whose loop-to-loop variation is ~10 %, `fastai_overhead.py` compares them step by step instead);
  * views batched (one forward of 2B) against sequential (two forwards of B);
  * mask generation (+ application) and strong augmentation as shares of the step;
  * peak memory: CUDA max_memory_allocated on GPU; on CPU the process's peak RSS (VmHWM, reset before each method
    through /proc/self/clear_refs), or with --cpu-mem the peak RSS of a fresh sub-process per method;
  * the fastai step with torch.optim.Adam (multi-tensor) through OptimWrapper instead of fastai's Adam (--torch-opt-methods).

  python benchmarks/em_speed.py --data .devdata/em_ds2.npz --device cuda --out benchmarks/results/em_speed_cuda.json
  python benchmarks/em_speed.py --data .devdata/em_ds2.npz --device cpu --threads 2 --n 20 --warmup 3 \\
      --out benchmarks/results/em_speed_cpu.json
  python benchmarks/em_speed.py --device cpu --threads 2 --n 20 --warmup 3 --allocator tuned \\
      --out benchmarks/results/em_speed_cpu_tuned.json
"""
from __future__ import annotations
import argparse, gc, json, resource, subprocess, sys, time
from copy import deepcopy
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO/'benchmarks'))
from masktwins_nb.cpu import apply_cpu_env
apply_cpu_env()   # OpenMP threads and wait policy, before torch loads (cpu notebook)
import torch, torch.nn.functional as F
from em_benchmark import RECIPE, METHODS, load_arrays, domains

SPEED_METHODS = ['source_only', 'selftrain', 'mic', 'random_pair', 'masktwins', 'masktwins_nocm', 'masktwins_seqviews']

def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def median_s(f, n, warmup, dev):
    "Median wall time (s) of `f()` over `n` calls after `warmup` calls"
    for _ in range(warmup): f()
    _sync(dev); ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); _sync(dev); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))

def make_dls(arrs, dev, n_batches, seed=0):
    from masktwins_nb.data import em_dataloaders
    src, tgt, tst = domains(arrs, 'masktwins', 1)
    return em_dataloaders(src, tgt, None, crop=RECIPE['crop'], downscale=1, bs=RECIPE['bs'], iters_per_epoch=n_batches,
                          seed=seed, device=dev)

def new_model(dev, seed=0):
    from masktwins_nb.models import UNet
    torch.manual_seed(seed)
    return UNet(in_ch=1, n_classes=2, depth=RECIPE['depth'], width=RECIPE['width']).to(dev)

def fastai_learner(name, dls, dev, opt='fastai'):
    "The benchmark's `masktwins_learner` for `name` (`opt`: 'fastai' Adam or 'torch' Adam via `OptimWrapper`), no metrics"
    from functools import partial
    from fastai.optimizer import Adam, OptimWrapper
    from masktwins_nb.learner import masktwins_learner
    lm, ov = METHODS.get(name, ('masktwins', {}))
    kw = dict(RECIPE, **ov)
    return masktwins_learner(dls, new_model(dev), method=lm, alpha=kw['alpha'], block_size=kw['block_size'], ratio=kw['ratio'],
                             cm_weight=kw['cm_weight'], threshold=kw['threshold'], seed=0,
                             batched_views=(name != 'masktwins_seqviews'), metrics=[],
                             opt_func=Adam if opt == 'fastai' else partial(OptimWrapper, opt=torch.optim.Adam))

def fastai_method(name, arrs, dev, n, warmup, opt='fastai'):
    "Median step / iteration time and peak memory of `name` trained through fastai (`opt`: 'fastai' Adam or 'torch' Adam via `OptimWrapper`)"
    from fastai.callback.core import Callback, CancelValidException
    dls = make_dls(arrs, dev, n + warmup)
    learn = fastai_learner(name, dls, dev, opt)
    steps, iters, faults, usr, sys_ = [], [], [], [], []
    class Timer(Callback):
        order = -20
        def before_fit(self): self.last = None
        def before_batch(self): _sync(dev); self.t0 = time.perf_counter(); self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        def after_batch(self):
            _sync(dev); t = time.perf_counter(); r = resource.getrusage(resource.RUSAGE_SELF); steps.append(t - self.t0)
            faults.append(r.ru_minflt - self.r0.ru_minflt); usr.append(r.ru_utime - self.r0.ru_utime); sys_.append(r.ru_stime - self.r0.ru_stime)
            if self.last is not None: iters.append(t - self.last)
            self.last = t
        def before_validate(self): raise CancelValidException()
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    else: rss0 = _reset_peak_rss()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, RECIPE['lr'], cbs=Timer())
    mem = dict(peak_mem_mib=torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == 'cuda' else \
          dict(peak_rss_mib=_vm('VmHWM'), rss_before_mib=rss0)
    del learn, dls; gc.collect()
    return dict(step_s=float(np.median(steps[warmup:])), iter_s=float(np.median(iters[warmup:])), n_timed=len(steps[warmup:]),
                minor_faults_per_step=float(np.median(faults[warmup:])), user_cpu_s=float(np.median(usr[warmup:])),
                sys_cpu_s=float(np.median(sys_[warmup:])), **mem)

def _vm(key):
    "A /proc/self/status memory field in MiB (Linux), else None"
    try:
        for l in open('/proc/self/status'):
            if l.startswith(key + ':'): return int(l.split()[1]) / 1024
    except OSError: return None

def _reset_peak_rss():
    "Reset the peak RSS (VmHWM) of this process (Linux: write 5 to /proc/self/clear_refs); returns the current RSS (MiB)"
    gc.collect()
    try: open('/proc/self/clear_refs', 'w').write('5')
    except OSError: pass
    return _vm('VmRSS')

def plain_step(method, dev, seed=0, mark=None):
    """One training step of `method` ('source_only' or 'masktwins') in plain PyTorch, as a function of a batch (xs, xt, ys):
    own model, teacher and `torch.optim.Adam`; the MaskTwins step is the callback's computation (teacher pseudo-labels,
    strong augmentation, complementary masks, both views in one forward, one backward of the summed loss, EMA update).
    `mark(phase)`, if given, is called at the end of 'fwd' (source forward), 'loss', 'bwd' and 'opt'."""
    from masktwins_nb.callbacks import pseudo_label, target_losses, ema_update, make_teacher
    from masktwins_nb.augment import StrongAug
    from masktwins_nb.masks import mask_views, apply_mask
    if method not in ('source_only', 'masktwins'): raise ValueError(f"plain_step: 'source_only' or 'masktwins', got {method!r}")
    mark = mark or (lambda phase: None)
    model = new_model(dev, seed); model.train()
    opt = torch.optim.Adam(model.parameters(), RECIPE['lr'])
    teacher = make_teacher(model, 'batch') if method == 'masktwins' else None
    aug, g = StrongAug(), torch.Generator().manual_seed(seed)
    b, r = RECIPE['block_size'], RECIPE['ratio']
    def step(xs, xt, ys):
        out = model(xs); mark('fwd')
        loss = F.cross_entropy(out, ys)
        if teacher is not None:
            with torch.no_grad(): p, w, _ = pseudo_label(teacher(xt), RECIPE['threshold'])
            a = aug(xt, g); ms = mask_views(a, 'complementary', b, r, g)
            ce, cm = target_losses(list(model(torch.cat([apply_mask(a, m) for m in ms])).chunk(2)), p, w)
            loss = loss + ce + RECIPE['cm_weight'] * cm
        mark('loss')
        opt.zero_grad(set_to_none=True); loss.backward(); mark('bwd')
        opt.step()
        if teacher is not None: ema_update(teacher, model, RECIPE['alpha'], 'batch')
        mark('opt')
    return step

def plain_parts(arrs, dev, n, warmup):
    "The MaskTwins computation in plain PyTorch: each pass alone, and the whole step as one loop"
    from masktwins_nb.callbacks import pseudo_label, target_losses, ema_update, make_teacher
    from masktwins_nb.augment import StrongAug
    from masktwins_nb.masks import mask_views, apply_mask
    from functools import partial
    dls = make_dls(arrs, dev, 4)
    xs, xt, ys = next(iter(dls.train))
    model = new_model(dev); teacher = make_teacher(model)
    opt = torch.optim.Adam(model.parameters(), RECIPE['lr'])
    aug, g = StrongAug(), torch.Generator().manual_seed(0)
    b, r = RECIPE['block_size'], RECIPE['ratio']
    xa = aug(xt, g); ms = mask_views(xa, 'complementary', b, r, g); views = torch.cat([apply_mask(xa, m) for m in ms])
    with torch.no_grad(): pl, w, _ = pseudo_label(teacher(xt))
    model.train()
    def src_fb():
        model.zero_grad(set_to_none=True); F.cross_entropy(model(xs), ys).backward()
    def teacher_f():
        with torch.no_grad(): pseudo_label(teacher(xt))
    def views_fb():
        model.zero_grad(set_to_none=True)
        ce, cm = target_losses(list(model(views).chunk(2)), pl, w); (ce + 0.01 * cm).backward()
    def views_fb_seq():
        model.zero_grad(set_to_none=True)
        ce, cm = target_losses([model(v) for v in views.chunk(2)], pl, w); (ce + 0.01 * cm).backward()
    src_fb(); views_fb()
    def opt_ema(): opt.step(); ema_update(teacher, model, 0.99)
    def masks_only(): mask_views(xa, 'complementary', b, r, g)
    def masks_apply(): [apply_mask(xa, m) for m in mask_views(xa, 'complementary', b, r, g)]
    def aug_only(): aug(xt, g)
    full_step, src_step = [partial(plain_step(m, dev), xs, xt, ys) for m in ('masktwins', 'source_only')]
    out = {}
    for k, f in dict(src_fwd_bwd=src_fb, teacher_fwd=teacher_f, views_fwd_bwd_batched=views_fb, views_fwd_bwd_seq=views_fb_seq,
                     opt_step_ema=opt_ema, mask_gen=masks_only, mask_gen_apply=masks_apply, strong_aug=aug_only,
                     plain_masktwins_step=full_step, plain_source_only_step=src_step).items():
        out[k] = median_s(f, n, warmup, dev)
    return out

def cpu_mem(name, arrs_path, n=3):
    "Peak RSS (MiB) of a fresh process training `name` for n steps (CPU)"
    code = (f"import sys, resource; sys.argv=['x']; sys.path[:0]=[{str(REPO)!r}, {str(REPO/'benchmarks')!r}]; import em_speed as s, torch; "
            f"torch.set_num_threads(torch.get_num_threads()); a=s.load_arrays({arrs_path!r}, s.RECIPE['downscale']); "
            f"r0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; s.fastai_method({name!r}, a, torch.device('cpu'), {n}, 1); "
            f"print('RSS', r0/1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    line = [l for l in r.stdout.splitlines() if l.startswith('RSS')]
    if not line: return None
    r0, r1 = map(float, line[-1].split()[1:])
    return dict(peak_rss_mib=r1, rss_increase_mib=r1 - r0)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None, help='real data root or cache .npz (em_benchmark.py cache)')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--n', type=int, default=25, help='timed steps per measurement (>= 20)')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--methods', nargs='+', default=SPEED_METHODS)
    p.add_argument('--torch-opt-methods', nargs='*', default=['source_only', 'masktwins'],
                   help='also time these through fastai with torch.optim.Adam (OptimWrapper) instead of fastai Adam')
    p.add_argument('--no-parts', action='store_true', help='skip the plain-PyTorch part timings')
    p.add_argument('--cpu-mem', action='store_true', help='on CPU, peak RSS per method from fresh sub-processes')
    p.add_argument('--allocator', default='default', choices=['default', 'tuned'],
                   help="CPU: glibc's default allocator, or `tune_cpu_allocator` (what `masktwins_train` uses on the CPU)")
    p.add_argument('--out', default=None, help='JSON file for the results')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if a.allocator == 'tuned':
        from masktwins_nb.cpu import tune_cpu_allocator
        if not tune_cpu_allocator(): raise SystemExit('tune_cpu_allocator: not available here (not glibc)')
    arrs = load_arrays(a.data, RECIPE['downscale'])
    torch.backends.cudnn.benchmark = False
    where = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f"device: {where}; crop {RECIPE['crop']}, bs {RECIPE['bs']}, UNet w{RECIPE['width']} d{RECIPE['depth']}; "
          f"median of {a.n} after {a.warmup} warm-up", flush=True)
    res = dict(device=where, recipe=RECIPE, n=a.n, warmup=a.warmup, allocator=a.allocator, methods={}, parts={})
    t0 = time.time()
    for m in a.methods:
        res['methods'][m] = fastai_method(m, arrs, dev, a.n, a.warmup)
        print(f"  {m:<20} {res['methods'][m]}  [{time.time() - t0:.0f}s]", flush=True)
    for m in a.torch_opt_methods:
        res['methods'][m + '+torchadam'] = fastai_method(m, arrs, dev, a.n, a.warmup, opt='torch')
        print(f"  {m + '+torchadam':<20} {res['methods'][m + '+torchadam']}  [{time.time() - t0:.0f}s]", flush=True)
    res['parts'] = {} if a.no_parts else plain_parts(arrs, dev, a.n, a.warmup)
    print(f"  parts {res['parts']}  [{time.time() - t0:.0f}s]", flush=True)
    if dev.type == 'cpu' and a.cpu_mem and a.data:
        for m in a.methods: res['methods'][m].update(cpu_mem(m, str(Path(a.data).resolve())) or {})
    res['derived'] = derived(res)
    print(speed_table(res))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))

def derived(res):
    M, P = res['methods'], res['parts']
    d = {}
    so = M.get('source_only', {}).get('step_s')
    if so:
        for m, v in M.items(): d[f'{m}_vs_source_only'] = v['step_s'] / so
    mt = M.get('masktwins', {}).get('step_s')
    if P:
        floor3 = P['src_fwd_bwd'] + P['teacher_fwd'] + P['views_fwd_bwd_batched']
        floor5 = floor3 + P['opt_step_ema'] + P['strong_aug'] + P['mask_gen_apply']
        d.update(floor_passes_s=floor3, floor_all_parts_s=floor5, plain_vs_floor_passes=P['plain_masktwins_step'] / floor3,
                 plain_vs_floor_all_parts=P['plain_masktwins_step'] / floor5,
                 views_seq_vs_batched_plain=P['views_fwd_bwd_seq'] / P['views_fwd_bwd_batched'],
                 plain_source_only_vs_src_fwd_bwd=P['plain_source_only_step'] / P['src_fwd_bwd'])
        if mt:
            d.update(masktwins_vs_floor_passes=mt / floor3, masktwins_vs_floor_all_parts=mt / floor5,
                     fastai_vs_plain_masktwins=mt / P['plain_masktwins_step'],
                     mask_gen_share=P['mask_gen'] / mt, mask_gen_apply_share=P['mask_gen_apply'] / mt,
                     strong_aug_share=P['strong_aug'] / mt)
        if so: d['fastai_vs_plain_source_only'] = so / P['plain_source_only_step']
    if 'masktwins_seqviews' in M and mt: d['fastai_seq_vs_batched_views'] = M['masktwins_seqviews']['step_s'] / mt
    for m in ('source_only', 'masktwins'):
        if m + '+torchadam' in M and m in M: d[f'{m}_fastai_adam_vs_torch_adam'] = M[m]['step_s'] / M[m + '+torchadam']['step_s']
    if P and 'masktwins+torchadam' in M:
        d['fastai_torchadam_vs_plain_masktwins'] = M['masktwins+torchadam']['step_s'] / P['plain_masktwins_step']
    if P and 'source_only+torchadam' in M:
        d['fastai_torchadam_vs_plain_source_only'] = M['source_only+torchadam']['step_s'] / P['plain_source_only_step']
    return d

def speed_table(res)->str:
    M, P, D = res['methods'], res['parts'], res.get('derived') or derived(res)
    L = [f"speed on {res['device']} (median of {res['n']} steps)", f"{'method':<20} {'s/step':>8} {'s/iter':>8} {'x src-only':>10} {'peak MiB':>9}"]
    for m, v in M.items():
        mem = v.get('peak_mem_mib') or v.get('peak_rss_mib')
        L.append(f"{m:<20} {v['step_s']:8.4f} {v['iter_s']:8.4f} {D.get(f'{m}_vs_source_only', float('nan')):10.2f} "
                 f"{'' if mem is None else f'{mem:9.0f}'}")
    if P:
        L.append('plain-PyTorch parts (s): ' + ', '.join(f'{k} {v:.4f}' for k, v in P.items()))
        L.append('ratios: ' + ', '.join(f'{k} {v:.3f}' for k, v in D.items() if not k.endswith('_vs_source_only')))
    return '\n'.join(L)

if __name__ == '__main__': main()
