"""CPU training steps alone and next to other PyTorch processes, for several thread / OpenMP wait settings.

A measured process times a plain training step (forward + backward + Adam) of the package's `UNet(1, 2)` at batch 8,
96 x 96, while 0, 1 or 2 competing processes run the same loop without pause (each with 2 threads). OpenMP threads that
spin-wait for a core another process holds stall every parallel region; the settings compared:

  today    the measured process as PyTorch starts by default (all cores, libgomp's default wait)
  passive  OMP_WAIT_POLICY=PASSIVE (threads sleep at once when idle)
  one      OMP_NUM_THREADS=1 (one thread: nothing to wait for, half the cores when quiet)
  spin     GOMP_SPINCOUNT=<n> (spin briefly, then sleep); spin:N sets N directly
  package  what `masktwins_nb.cpu.cpu_env` sets for the console scripts and benchmarks (the package's default:
           OMP_NUM_THREADS = the cores available to the process, GOMP_SPINCOUNT=1000)

Competitors use either the same setting as the measured process ('same') or PyTorch's default ('today').
Everything runs in one script run, the scenarios interleaved over --rounds rounds so that machine noise falls on all;
reported are medians of the per-round medians, and ratios to the quiet step of the same setting and of 'today'.

Run it on an otherwise idle machine (the 'quiet' rows need one):

  python benchmarks/cpu_contention.py --rounds 3 --out benchmarks/results/cpu_contention.json
"""
from __future__ import annotations
import argparse, json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
import torch
from masktwins_nb.models import UNet
torch.manual_seed(0)
model = UNet(1, 2)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x, y = torch.randn(8, 1, 96, 96), torch.randint(0, 2, (8, 96, 96))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
forever, n, budget = {forever}, {n}, {budget}
for _ in range(2): step()
if forever:
    print('READY', flush=True)
    while True: step()
ts, t_end = [], time.perf_counter() + budget
while len(ts) < n and (len(ts) < 4 or time.perf_counter() < t_end):
    t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
print('RESULT', json.dumps(dict(threads=torch.get_num_threads(), steps=len(ts), step_s=sorted(ts)[len(ts) // 2])))
"""

def setting_env(name:str, spin:int)->dict:
    "Environment variables of a setting (added to a clean copy of the caller's environment)"
    if name == 'today': return {}   # PyTorch's defaults: a thread per core, libgomp's default wait
    if name == 'passive': return dict(OMP_WAIT_POLICY='PASSIVE')
    if name == 'one': return dict(OMP_NUM_THREADS='1')
    if name == 'spin': return dict(GOMP_SPINCOUNT=str(spin))
    if name.startswith('spin:'): return dict(GOMP_SPINCOUNT=name[5:])
    if name == 'package':
        sys.path.insert(0, str(REPO))
        from masktwins_nb.cpu import cpu_env
        return cpu_env({})
    raise ValueError(f"unknown setting {name!r}")

def _env(extra:dict)->dict:
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT',
                                                          'MKL_NUM_THREADS', 'KMP_BLOCKTIME')}
    return {**env, **extra}

def _code(forever, n=30, budget=25.0): return CHILD.format(repo=str(REPO), forever=forever, n=n, budget=budget)

def measure(setting:dict, competitors:list, n:int, budget:float)->dict:
    "Median step of one process with `setting`, while the `competitors` (environments) run the loop without pause"
    procs = [subprocess.Popen([sys.executable, '-c', _code(True)], env=_env(c), stdout=subprocess.PIPE, text=True)
             for c in competitors]
    try:
        for p in procs: p.stdout.readline()   # READY: warmed up
        r = subprocess.run([sys.executable, '-c', _code(False, n, budget)], env=_env(setting), capture_output=True,
                           text=True)
    finally:
        for p in procs: p.kill(); p.wait()
    line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    if r.returncode or not line: raise RuntimeError(f"measured process failed:\n{r.stderr[-3000:]}")
    return json.loads(line[-1][7:])

SCENARIOS = ('quiet', '1 same', '1 today', '2 same')

def scenarios(settings, spin, which=SCENARIOS):
    "(setting, competitors) pairs: quiet, one 2-thread competitor (same setting, PyTorch default), two competitors"
    two = dict(OMP_NUM_THREADS='2')
    for s in settings:
        env = setting_env(s, spin)
        comp = {'quiet': [], '1 same': [{**env, **two}], '1 today': [two], '2 same': [{**env, **two}] * 2}
        for c in which:
            if not (c == '1 today' and s == 'today'): yield s, c, env, comp[c]

def run(a)->dict:
    rows = {}
    for r in range(a.rounds):
        for s, scen, env, comp in scenarios(a.settings, a.spin, a.scenarios):
            m = measure(env, comp, a.n, a.budget)
            rows.setdefault((s, scen), []).append(m['step_s'])
            print(f"round {r} {s:<8} {scen:<8} {m['step_s'] * 1e3:7.0f} ms ({m['steps']} steps, {m['threads']} threads)",
                  flush=True)
    med = {f"{s}|{c}": float(np.median(v)) for (s, c), v in rows.items()}
    return dict(rounds=a.rounds, spin=a.spin, cores=len(os.sched_getaffinity(0)), settings=a.settings,
                package_env=setting_env('package', a.spin) if 'package' in a.settings else None,
                per_round={f"{s}|{c}": v for (s, c), v in rows.items()}, median_step_s=med)

def quiet_pairs(a)->dict:
    "Quiet steps of 'today' and 'package' in alternating fresh processes: the per-pair ratios and their median"
    env0, env1 = setting_env('today', a.spin), setting_env('package', a.spin)
    r = [measure(env1, [], a.n, a.budget)['step_s'] / measure(env0, [], a.n, a.budget)['step_s']
         for _ in range(a.quiet_pairs)]
    print('quiet package/today per pair:', ' '.join(f'{x:.3f}' for x in r), flush=True)
    return dict(ratios=r, median=float(np.median(r)))

def report(res)->str:
    med = res['median_step_s']; q0 = med.get('today|quiet')
    if not all(f'{s}|quiet' in med for s in res['settings']): return json.dumps(med, indent=1)
    L = [f"median step (s) over {res['rounds']} rounds, {res['cores']} cores; x = ratio to the same setting's quiet step",
         f"{'setting':<9}{'quiet':>8}{'1 same':>16}{'1 today':>16}{'2 same':>16}{'quiet vs today':>16}"]
    for s in res['settings']:
        q = med[f'{s}|quiet']
        cells = [f"{med[f'{s}|{c}']:7.2f} ({med[f'{s}|{c}'] / q:4.1f}x)" if f'{s}|{c}' in med else f"{'-':>15}"
                 for c in ('1 same', '1 today', '2 same')]
        L.append(f"{s:<9}{q:8.3f} " + ' '.join(cells) + (f"{q / q0:15.3f}" if q0 else ''))
    if 'quiet_pairs' in res:
        qp = res['quiet_pairs']
        L.append(f"quiet step package/today, {len(qp['ratios'])} alternating pairs: median {qp['median']:.3f}")
    return '\n'.join(L)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--settings', nargs='+', default=['today', 'package'])
    p.add_argument('--spin', type=int, default=10000, help="GOMP_SPINCOUNT of the 'spin' setting")
    p.add_argument('--scenarios', nargs='+', default=list(SCENARIOS), choices=SCENARIOS)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--n', type=int, default=30, help='steps per measurement (fewer when --budget seconds are spent)')
    p.add_argument('--budget', type=float, default=20.0)
    p.add_argument('--quiet_pairs', type=int, default=0, help="then alternate quiet 'today'/'package' this many times")
    p.add_argument('--out', default=None)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed run still stops its competitors (`finally`)
    t0 = time.time(); res = run(a)
    if a.quiet_pairs: res['quiet_pairs'] = quiet_pairs(a)
    res['seconds'] = round(time.time() - t0)
    print(report(res))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
