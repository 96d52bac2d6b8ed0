"""Run benchmark jobs as sub-processes, a few at a time, each writing its log to <out>/logs/<tag>.log and its result to
<out>/<tag>.json (shared by em_benchmark.py and em3d_benchmark.py)."""
from __future__ import annotations
import json, os, subprocess, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

def run_jobs(todo:list, # the jobs still to run (dicts)
             cmd, # job -> its command line (list)
             tag, # job -> its run tag (names the log and the result JSON)
             out, # folder of the result JSONs (and of logs/)
             threads:int, # OMP_NUM_THREADS of each process
             j:int, # processes at a time
             message, # (job, result dict) -> what is printed for a finished job
             log_mode:str='w', # 'a' keeps the log of an earlier, interrupted attempt
            )->int: # 0 when every job wrote its JSON, 1 otherwise
    "Run `todo` in `j` parallel processes; print one line per finished job and a total"
    out, t0 = Path(out), time.time()
    (out/'logs').mkdir(parents=True, exist_ok=True)
    def go(job):
        t = tag(job)
        with open(out/'logs'/f'{t}.log', log_mode) as f:
            rc = subprocess.run(cmd(job), stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')).returncode
        res = out/f'{t}.json'
        msg = message(job, json.loads(res.read_text())) if res.exists() else f'FAILED rc={rc}'
        print(f"[{time.time() - t0:6.0f}s] {t}: {msg}", flush=True)
        return res.exists()
    with ThreadPoolExecutor(j) as ex: oks = list(ex.map(go, todo))
    print(f"done: {sum(oks)}/{len(todo)} ok in {time.time() - t0:.0f}s", flush=True)
    return 0 if all(oks) else 1

def parse_set(items, # KEY=VALUE strings (None: none)
              fields, # the keys allowed (a recipe's fields)
             )->dict:
    "`KEY=VALUE` recipe overrides (values read as JSON where they parse, as text otherwise); keys must be in `fields`"
    out = {}
    for it in items or []:
        k, sep, v = it.partition('=')
        if not sep or k not in fields: raise SystemExit(f"--set {it!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        try: out[k] = json.loads(v)
        except json.JSONDecodeError: out[k] = v
    return out
