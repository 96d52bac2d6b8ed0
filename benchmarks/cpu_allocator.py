"""CPU training steps with glibc's default allocator against `tune_cpu_allocator` (freed memory kept in the process).

The allocator setting holds for a whole process, so the two are compared in fresh processes, alternating
(default, tuned, default, tuned, ...) for --rounds rounds; each process times the fastai step of source-only and of
MaskTwins at the benchmark's recipe (`em_speed.fastai_method`: median step time, user and system CPU time per step
(all threads), minor page faults per step, peak RSS). The system CPU time is where the page faults are paid, so it
shows the allocator's effect even when other load on the machine blurs the wall times.
Reported: per-round numbers, the medians over rounds, and the tuned/default ratio of those medians.

  python benchmarks/cpu_allocator.py --threads 2 --rounds 4 --out benchmarks/results/cpu_allocator.json
"""
from __future__ import annotations
import argparse, json, subprocess, sys
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, torch
sys.path[:0] = [{repo!r}, {bench!r}]
torch.set_num_threads({threads})
from masktwins_nb.cpu import tune_cpu_allocator
tuned = {tuned} and tune_cpu_allocator()
import em_speed as s
a = s.load_arrays({data!r}, s.RECIPE['downscale'])
out = dict(tuned=tuned)
for m, n in {methods!r}:
    s._reset_peak_rss()
    out[m] = s.fastai_method(m, a, torch.device('cpu'), n, {warmup})
print('RESULT', json.dumps(out))
"""

def child(tuned, a):
    code = CHILD.format(repo=str(REPO), bench=str(REPO/'benchmarks'), threads=a.threads, tuned=tuned, data=a.data,
                        methods=[('source_only', a.n), ('masktwins', a.n_mt)], warmup=a.warmup)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    if r.returncode or not line: raise RuntimeError(f"child process failed:\n{r.stderr[-3000:]}")
    return json.loads(line[-1][7:])

METHODS, KEYS = ('source_only', 'masktwins'), ('step_s', 'minor_faults_per_step', 'user_cpu_s', 'sys_cpu_s', 'peak_rss_mib')

def summary(runs):
    "Medians over rounds per allocator, the ratio of the medians, and the per-round (paired) tuned/default ratios"
    med = {w: {m: {k: float(np.median([r[m][k] for r in runs if r['allocator'] == w])) for k in KEYS} for m in METHODS}
           for w in ('default', 'tuned')}
    pairs = [(d, t) for d, t in zip(runs[::2], runs[1::2]) if (d['allocator'], t['allocator']) == ('default', 'tuned')]
    paired = {m: [t[m]['step_s'] / d[m]['step_s'] for d, t in pairs] for m in METHODS}
    return dict(median=med, tuned_vs_default={m: med['tuned'][m]['step_s'] / med['default'][m]['step_s'] for m in METHODS},
                paired_ratios=paired, paired_ratio_median={m: float(np.median(v)) for m, v in paired.items()},
                tuned_faster_rounds={m: int(sum(v < 1 for v in paired[m])) for m in METHODS})

def report(res)->str:
    L = [f"medians over {res['rounds']} rounds ({res['threads']} threads):"]
    for m in METHODS:
        d, t = res['median']['default'][m], res['median']['tuned'][m]
        L.append(f"  {m:<12} step {d['step_s'] * 1e3:.0f} -> {t['step_s'] * 1e3:.0f} ms (tuned/default: of the medians "
                 f"{res['tuned_vs_default'][m]:.3f}, per round median {res['paired_ratio_median'][m]:.3f}, tuned faster in "
                 f"{res['tuned_faster_rounds'][m]}/{res['rounds']} rounds); system CPU time/step {d['sys_cpu_s'] * 1e3:.0f} -> "
                 f"{t['sys_cpu_s'] * 1e3:.0f} ms, user {d['user_cpu_s'] * 1e3:.0f} -> {t['user_cpu_s'] * 1e3:.0f} ms; "
                 f"faults/step {d['minor_faults_per_step']:.0f} -> {t['minor_faults_per_step']:.0f}; "
                 f"peak RSS {d['peak_rss_mib']:.0f} -> {t['peak_rss_mib']:.0f} MiB")
    return '\n'.join(L)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None, help='real data root or cache .npz (default: $MASKTWINS_DATA or ../shared/data)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rounds', type=int, default=4, help='default/tuned process pairs')
    p.add_argument('--n', type=int, default=12, help='timed source-only steps per process')
    p.add_argument('--n-mt', type=int, default=8, help='timed MaskTwins steps per process')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--out', default=None)
    a = p.parse_args(argv)
    runs = []
    for i in range(a.rounds):
        for tuned in (False, True):
            r = child(tuned, a); runs.append(dict(round=i, allocator='tuned' if tuned else 'default', **r))
            print(f"round {i} {runs[-1]['allocator']:<8} " + '  '.join(
                f"{m}: {r[m]['step_s'] * 1e3:.0f} ms (CPU user {r[m]['user_cpu_s'] * 1e3:.0f} sys {r[m]['sys_cpu_s'] * 1e3:.0f} ms), "
                f"{r[m]['minor_faults_per_step']:.0f} faults/step, peak RSS {r[m]['peak_rss_mib']:.0f} MiB"
                for m in ('source_only', 'masktwins')), flush=True)
    res = dict(threads=a.threads, rounds=a.rounds, n=a.n, n_mt=a.n_mt, warmup=a.warmup, runs=runs, **summary(runs))
    print(report(res))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__': sys.exit(main() and 0)
