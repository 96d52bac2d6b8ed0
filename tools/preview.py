"""A local preview of the documentation site that needs no quarto, and a headless-browser check of it.

    python tools/preview.py               # process the notebooks (nbdev_proc_nbs), render them to _preview/
    python tools/preview.py --no-proc     # render the notebooks already processed in _proc/
    python tools/preview.py --check       # ... then open every page in headless Chromium and check it

nbdev processes each notebook as for the site (`nbdev_proc_nbs`: the API docs rendered, hidden cells removed; quarto
is never installed by this script). nbconvert renders every processed notebook with its JupyterLab template, and
`nav.html` lists the pages in the sidebar's order (nbs/sidebar.yml); every page links to it and to its neighbours.
Open `_preview/nav.html` in a browser. Math is typeset by MathJax from its CDN when the browser is online.

The check (`--check`) needs selenium (the `dev` extra) and Chromium with its driver (Debian: `apt-get install chromium
chromium-driver`); without them it says so and is skipped. It never uses the network. On every page it checks: the page
loads without a script error, the title and the API sections (one per `show_doc`) are there, every figure stored in
the notebook is shown and decoded, every link to another page of the preview leads to a page that exists, and no
FutureWarning is shown. Signatures with raw markdown links (backticks in a parameter comment) or with fastai's
24 `Callback` event arguments (a callback without an `__init__` of its own) are listed (errors with `--strict`).
"""
from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROC, OUT = ROOT/'_proc', ROOT/'_preview'

# A page: nbconvert's JupyterLab template, with a line of navigation on top. No require.js: the notebooks store no
# widget state, and nothing else on the pages uses it.
TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block extra_css -%}<style>
nav.preview { font: 14px sans-serif; padding: 6px 12px; border-bottom: 1px solid #ddd; background: #f7f7f7; }
nav.preview a { margin-right: 1.5em; }
</style>{%- endblock extra_css -%}
{%- block body_header -%}
{{ super() }}
<nav class="preview">
<a href="nav.html">contents</a>
{%- if resources.preview.prev %}<a href="{{ resources.preview.prev }}" rel="prev">&larr; {{ resources.preview.prev_title | escape }}</a>{% endif %}
{%- if resources.preview.next %}<a href="{{ resources.preview.next }}" rel="next">{{ resources.preview.next_title | escape }} &rarr;</a>{% endif %}
</nav>
{%- endblock body_header -%}
"""


def settings() -> dict:
    "settings.ini's DEFAULT section"
    import configparser
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return dict(cfg['DEFAULT'])


def process():
    "`nbdev_proc_nbs` into _proc/, less its first step (which would install quarto where it is missing)"
    shutil.rmtree(PROC, ignore_errors=True)
    code = 'import nbdev.quarto as q; q._ensure_quarto = lambda: None; q.nbdev_proc_nbs.__wrapped__()'
    if subprocess.run([sys.executable, '-c', code], cwd=ROOT).returncode:
        raise SystemExit("the docs processing (nbdev_proc_nbs) failed; its error is above")


def sidebar() -> list:
    "The notebooks of nbs/sidebar.yml, in order (sections flattened)"
    import yaml
    def flat(items):
        for it in items:
            if isinstance(it, str): yield it
            elif isinstance(it, dict):
                if 'contents' in it: yield from flat(it['contents'])
                elif 'href' in it: yield it['href']
    return [n for n in flat(yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents'])
            if n.endswith('.ipynb')]


def frontmatter(nb) -> dict:
    "The YAML front matter nbdev put in the first (raw) cell"
    import yaml
    c = nb.cells[0] if nb.cells else None
    if c is None or c.cell_type != 'raw' or not c.source.startswith('---'): return {}
    return yaml.safe_load(c.source.strip().strip('-')) or {}


def _preprocessors(doc_url:str):
    "nbconvert preprocessors turning nbdev's quarto-flavoured notebook into one nbconvert renders as quarto would"
    from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor
    attrs = re.compile(r'(\]\([^)\s]*\))\{[^}\n]*\}')   # [source](url){target="_blank" ...}: quarto's link attributes

    def md(s): return attrs.sub(r'\1', s).replace(doc_url, '')   # links to the site become links between pages

    def anchor(m):   # nbdev links to `page.html#strongaug`, quarto's id of `### StrongAug`; nbconvert's id keeps the case
        low = m.group(2).strip().lower().replace(' ', '-')
        return m.group(0) if low == m.group(2).strip() else f'{m.group(1)} <a id="{low}"></a>{m.group(2)}'

    class Quarto(Preprocessor):
        "Front matter to a title; `#| echo/output/include: false` to nbconvert's removal tags; site links made relative"
        def preprocess(self, nb, resources):
            nb.metadata.pop('widgets', None)   # the widget state nbdev's processing recorded: no widget is shown
            fm = frontmatter(nb)
            if fm: nb.cells[0] = _md_cell(f"# {fm.get('title', '')}" + (f"\n\n> {fm['description']}" if fm.get('description') else ''))
            return super().preprocess(nb, resources)
        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type == 'markdown': cell.source = md(cell.source)
            if cell.cell_type != 'code': return cell, resources
            lines = cell.source.split('\n')
            opts = dict(re.match(r'#\|\s*([\w-]+)\s*:\s*(\S+)', l).groups() for l in lines if re.match(r'#\|\s*[\w-]+\s*:', l))
            tags = set(cell.metadata.get('tags', []))
            if opts.get('echo') == 'false': tags.add('remove_input')
            if opts.get('output') == 'false': tags.add('remove_output')
            if opts.get('include') == 'false': tags.add('remove_cell')
            cell.metadata['tags'] = sorted(tags)
            cell.source = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
            for o in cell.get('outputs', []):
                if 'text/markdown' in o.get('data', {}):
                    o['data']['text/markdown'] = re.sub(r'^(#{2,4}) (\S[^\n<]*)$', anchor, md(o['data']['text/markdown']), flags=re.M)
            return cell, resources

    remove = TagRemovePreprocessor(remove_cell_tags={'remove_cell'}, remove_input_tags={'remove_input'},
                                   remove_all_outputs_tags={'remove_output'})
    return [Quarto(), remove]


def _md_cell(s):
    import nbformat
    return nbformat.v4.new_markdown_cell(s)


def render(out:Path=OUT) -> list:
    "Render every notebook of the sidebar from _proc/ to `out`, and `out/nav.html`; return [(file, title, notebook)]"
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    cfg = settings()
    doc_url = cfg['doc_host'].rstrip('/') + '/' + cfg['doc_baseurl'].strip('/') + '/'
    names = sidebar()
    left = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb') if p.name not in names)
    if left: print(f"not in nbs/sidebar.yml, so not previewed: {', '.join(left)} (nbdev_proc_nbs regenerates the sidebar)")
    missing = [n for n in names if not (PROC/n).exists()]
    if missing: raise SystemExit(f"not processed: {', '.join(missing)} (run without --no-proc)")
    nbs = [nbformat.read(PROC/n, as_version=4) for n in names]
    pages = []
    for n, nb in zip(names, nbs):
        fm = frontmatter(nb)
        pages.append(dict(notebook=n, file=fm.get('output-file', Path(n).stem + '.html'), title=fm.get('title', n),
                          description=fm.get('description', '')))
    shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
    exp = HTMLExporter(template_name='lab', extra_loaders=[DictLoader({'preview.html.j2': TEMPLATE})],
                       template_file='preview.html.j2', exclude_input_prompt=True, exclude_output_prompt=True)
    for p in _preprocessors(doc_url): exp.register_preprocessor(p, enabled=True)
    for i, (pg, nb) in enumerate(zip(pages, nbs)):
        prev, nxt = (pages[i - 1] if i else {}), (pages[i + 1] if i + 1 < len(pages) else {})
        res = dict(preview=dict(prev=prev.get('file'), prev_title=prev.get('title'), next=nxt.get('file'),
                                next_title=nxt.get('title')), metadata=dict(name=pg['title']))
        html, _ = exp.from_notebook_node(nb, resources=res)
        (out/pg['file']).write_text(html, encoding='utf-8')
    # the navigation page is a notebook too: a list of links in a markdown cell, rendered like the others
    nav = nbformat.v4.new_notebook(cells=[_md_cell(f"# {cfg['title']}\n\n> {cfg['description']}\n\nA local preview of the "
                                                   "documentation, the notebooks in the order of the site's sidebar:\n\n" +
                                                   '\n'.join(f"1. [{p['title']}]({p['file']})" +
                                                             (f": {p['description']}" if p['description'] else '')
                                                             for p in pages))])
    html, _ = exp.from_notebook_node(nav, resources=dict(preview={}, metadata=dict(name=cfg['title'])))
    (out/'nav.html').write_text(html, encoding='utf-8')
    for pg, nb in zip(pages, nbs): pg['nb'] = nb
    return pages


# ---------------------------------------------------------------------------------------------------- browser check
def expected(nb) -> dict:
    "What a page must show: its API sections (show_doc headings) and the number of figures stored in the notebook"
    api, figs, sig_links = [], 0, []
    for c in nb.cells:
        for o in c.get('outputs', []):
            data = o.get('data', {})
            figs += any(k.startswith('image/') for k in data)
            md = data.get('text/markdown', '')
            md = ''.join(md) if isinstance(md, list) else md
            if '[source](' in md or re.search(r'^#{2,4} \S', md, re.M) and '```' in md:
                m = re.search(r'^#{2,4} (.+)$', md, re.M)
                if m: api.append(m.group(1).strip())
    return dict(api=api, figures=figs)


JS_PAGE = r"""
const heads = [...document.querySelectorAll('h1, h2, h3, h4')].map(h => h.textContent.replace(/¶$/, '').trim());
const imgs = [...document.querySelectorAll('.jp-OutputArea-output img')];
const sigLinks = [...document.querySelectorAll('.jp-RenderedMarkdown pre')]
  .filter(p => /`\]\([^)\s]*\)/.test(p.textContent) || p.querySelector('a')).map(p => p.textContent.split('\n')[0]);
const hooks = [...document.querySelectorAll('.jp-RenderedMarkdown pre')]
  .filter(p => /after_create\s*:/.test(p.textContent)).map(p => p.textContent.split('\n')[0]);
const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
  .filter(h => !/^(https?:|mailto:|#|data:)/.test(h));
const sigs = [...document.querySelectorAll('h2, h3, h4')].filter(h => {
  let n = h.nextElementSibling; return n && n.querySelector && (n.matches('div.highlight, pre') || n.querySelector('pre'));
}).map(h => h.textContent.replace(/¶$/, '').trim());
const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
return {ids, title: document.title, ready: document.readyState, heads, sigs, sigLinks, hooks, links,
        images: imgs.map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
        text: document.body.innerText.length, future: document.body.innerText.includes('FutureWarning')};
"""


def find_browser():
    "(chromium, chromedriver) paths, or None with the reason"
    chrome = os.environ.get('CHROMIUM') or next((shutil.which(b) for b in ('chromium', 'chromium-browser', 'google-chrome')
                                                 if shutil.which(b)), None)
    driver = os.environ.get('CHROMEDRIVER') or shutil.which('chromedriver')
    if chrome is None or driver is None:
        return None, "no headless Chromium and chromedriver found (Debian: apt-get install chromium chromium-driver)"
    try: import selenium  # noqa: F401
    except ImportError: return None, "selenium is not installed (pip install -e '.[dev]')"
    return (chrome, driver), ''


def check(pages:list, out:Path=OUT, strict:bool=False) -> int:
    "Open every page in headless Chromium; print one line per page and every problem; return the number of errors"
    import tempfile
    found, why = find_browser()
    if found is None:
        print(f"browser check skipped: {why}")
        return 0
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chrome, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    profile = tempfile.mkdtemp(prefix='preview-chromium-')
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
              '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost', '--allow-file-access-from-files'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.set_page_load_timeout(120)
    errors, offline, ids, frags = 0, set(), {}, []
    try:
        for pg in [dict(file='nav.html', title=None, nb=None, notebook='(navigation)')] + pages:
            problems, warns = [], []
            drv.get((out/pg['file']).resolve().as_uri())
            r = drv.execute_script(JS_PAGE)
            for e in drv.get_log('browser'):
                if e.get('level') != 'SEVERE': continue
                m = re.search(r'(https?://[^\s"]+)', e.get('message', ''))
                if m and 'net::ERR_NAME_NOT_RESOLVED' in e['message'] and not m.group(1).startswith('file:'):
                    offline.add(m.group(1).split('?')[0]); continue   # a CDN script (MathJax) while offline
                problems.append(f"browser: {e['message'][:300]}")
            ids[pg['file']] = set(r['ids'])
            frags += [(pg['file'], h) for h in r['links'] if '#' in h]
            if r['ready'] != 'complete': problems.append(f"page did not finish loading ({r['ready']})")
            if r['text'] < 50: problems.append('the page is (nearly) empty')
            if r['future']: problems.append('a FutureWarning is shown')
            bad_links = sorted({h for h in r['links'] if not (out/h.split('#')[0]).exists()})
            if bad_links: problems.append(f"links to missing pages: {', '.join(bad_links)}")
            bad_img = [i for i in r['images'] if not i['ok']]
            if bad_img: problems.append(f"{len(bad_img)} of {len(r['images'])} figures not decoded")
            if pg['nb'] is not None:
                exp = expected(pg['nb'])
                if pg['title'] not in r['heads']: problems.append(f"title {pg['title']!r} missing")
                miss = [a for a in exp['api'] if a not in r['sigs']]
                if miss: problems.append(f"API sections missing or without a signature: {', '.join(miss[:8])}")
                if len(r['images']) != exp['figures']:
                    problems.append(f"{len(r['images'])} figures shown, {exp['figures']} stored in the notebook")
                if r['sigLinks']:
                    (problems if strict else warns).append(
                        f"{len(r['sigLinks'])} signature(s) with a raw markdown link (backticks in a parameter comment): "
                        + '; '.join(s.strip()[:60] for s in r['sigLinks'][:5]))
                if r['hooks']:
                    (problems if strict else warns).append(
                        f"{len(r['hooks'])} signature(s) listing fastai's Callback event arguments (no __init__ of its own): "
                        + '; '.join(s.strip()[:60] for s in r['hooks'][:5]))
                summary = f"{len(exp['api'])} API sections, {len(r['images'])} figures"
            else: summary = f"{len(r['links'])} links"
            print(f"{'ok  ' if not problems else 'FAIL'} {pg['file']:<28} {pg['notebook']:<32} {summary}")
            for p in problems: print(f"     error: {p}")
            for w in warns: print(f"     warning: {w}")
            errors += len(problems)
    finally:
        drv.quit(); shutil.rmtree(profile, ignore_errors=True)
    lost = sorted({f"{h} (from {f})" for f, h in frags
                   if h.split('#')[0] in ids and h.split('#', 1)[1] not in ids[h.split('#')[0] or f]})
    if lost: print(f"warning: {len(lost)} link(s) to a section that is not on its page: {'; '.join(lost[:10])}")
    if offline: print(f"offline: not loaded from the network (the pages work without): {', '.join(sorted(offline))}")
    print(f"browser check: {len(pages) + 1} pages, {errors} error(s)")
    return errors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--no-proc', action='store_true', help='render the notebooks already processed in _proc/')
    p.add_argument('--check', action='store_true', help='check every page in headless Chromium (skipped without one)')
    p.add_argument('--strict', action='store_true', help='raw links or Callback event arguments in signatures are errors, not warnings')
    p.add_argument('--out', default=str(OUT), help='output folder (default: _preview)')
    a = p.parse_args(argv)
    if not a.no_proc: process()
    out = Path(a.out)
    pages = render(out)
    print(f"preview: {len(pages)} pages and nav.html in {os.path.relpath(out)}/ (open {os.path.relpath(out/'nav.html')})")
    return 1 if a.check and check(pages, out, a.strict) else 0


if __name__ == '__main__': sys.exit(main())
