r"""Execute notebooks top to bottom with nbconvert, as "Run All" in JupyterLab does, skipping the cells that carry one of
nbdev's test flags (`#| slow`, `#| cuda` by default; settings.ini `tst_flags`) and those marked `#| eval: false`.

    python tools/execute_nbs.py                      # every notebook in nbs/, one after the other; outputs discarded
    python tools/execute_nbs.py nbs/06_learner.ipynb --inplace   # store the outputs in the notebook (then nbdev_clean)
    python tools/execute_nbs.py --flags ''           # run the slow and GPU cells too

The same preprocessor works from `jupyter nbconvert` (run from the repository root):

    PYTHONPATH=tools jupyter nbconvert --to notebook --output-dir _executed \
        --NotebookExporter.preprocessors=execute_nbs.SkipFlagsExecutePreprocessor nbs/*.ipynb

Each notebook runs in a fresh kernel with nbs/ as its working folder (as `nbdev_test` runs it). The script prints the
time of every notebook, and the warnings written to the outputs (FutureWarning, DeprecationWarning, ...); it exits 1
when a notebook fails.
"""
from __future__ import annotations
import argparse, configparser, re, sys, time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor
from traitlets import List, Unicode

ROOT = Path(__file__).resolve().parents[1]


def _tst_flags() -> list:
    "The test flags of settings.ini (`tst_flags`): the cells `nbdev_test` skips unless asked"
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT'].get('tst_flags', 'slow cuda').split()


def skipped(cell, flags) -> bool:
    "Whether `nbdev_test` would skip this code cell: a directive in `flags`, or `#| eval: false`"
    from nbdev.process import extract_directives
    d = extract_directives(cell, remove=False)
    return bool(set(flags) & d.keys()) or d.get('eval:', [''])[0].lower() == 'false'


class SkipFlagsExecutePreprocessor(ExecutePreprocessor):
    "nbconvert's `ExecutePreprocessor`, leaving alone (source and stored outputs) the cells `nbdev_test` skips"
    skip_flags = List(Unicode(), default_value=None, allow_none=True,
                      help="nbdev directives whose cells are not run (default: settings.ini tst_flags)").tag(config=True)
    timeout = 1800   # seconds per cell; the longest non-slow cells train for about a minute on a busy CPU

    def preprocess_cell(self, cell, resources, index):
        flags = _tst_flags() if self.skip_flags is None else self.skip_flags
        if cell.cell_type == 'code' and skipped(cell, flags): return cell, resources
        return super().preprocess_cell(cell, resources, index)


_WARN = re.compile(r'\b(\w*Warning)\b: ')

def warnings_in(nb) -> list:
    "The `...Warning: ` lines of the notebook's outputs"
    found = []
    for c in nb.cells:
        for o in c.get('outputs', []):
            txt = o.get('text', '') if o.get('output_type') == 'stream' else '\n'.join(o.get('traceback', []))
            found += [l.strip() for l in str(txt).splitlines() if _WARN.search(l)]
    return found


def execute(path:Path, flags:list, inplace:bool=False, kernel:str|None=None) -> tuple:
    "Execute one notebook; (ok, seconds, warnings, error text)"
    nb = nbformat.read(path, as_version=4)
    ep = SkipFlagsExecutePreprocessor(skip_flags=flags, **({'kernel_name': kernel} if kernel else {}))
    t0 = time.time()
    try: ep.preprocess(nb, {'metadata': {'path': str(path.parent)}})
    except Exception as e: return False, time.time() - t0, warnings_in(nb), str(e)[-3000:]
    if inplace: nbformat.write(nb, path)
    return True, time.time() - t0, warnings_in(nb), ''


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: every nbs/*.ipynb)')
    p.add_argument('--flags', default=None, help="space-separated directives to skip (default: settings.ini tst_flags)")
    p.add_argument('--inplace', action='store_true', help='write the executed notebooks back (then run nbdev_clean)')
    p.add_argument('--kernel', default=None, help="kernel name (default: the notebook's kernelspec)")
    a = p.parse_args(argv)
    flags = _tst_flags() if a.flags is None else a.flags.split()
    nbs = [Path(n) for n in a.notebooks] or sorted((ROOT/'nbs').glob('*.ipynb'))
    failed, t_all = [], time.time()
    for n in nbs:
        ok, secs, warns, err = execute(n, flags, a.inplace, a.kernel)
        print(f"{'ok  ' if ok else 'FAIL'} {n.name:<32} {secs:7.1f} s" + (f"  {len(warns)} warning line(s)" if warns else ''),
              flush=True)
        for w in dict.fromkeys(warns): print(f"     {w[:200]}")
        if not ok: failed.append(n.name); print(err, file=sys.stderr)
    print(f"executed {len(nbs)} notebook(s) in {time.time() - t_all:.0f} s, skipping cells flagged {' '.join(flags) or '(none)'}; "
          f"{len(nbs) - len(failed)} passed, {len(failed)} failed" + (f": {' '.join(failed)}" if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main())
