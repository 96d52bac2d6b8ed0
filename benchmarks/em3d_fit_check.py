"""Does the 3-D recipe fit its own source? One EM3D source-only run (seed 0, one CPU thread) on the prepared VNC III ->
lucchi3d volumes (`em3d_benchmark.py prepare`), with the default UNet3d or an in-plane-only one (anisotropy 100: 1x3x3
kernels and no z pooling at every level), then the share of voxels predicted foreground on the source volume it was
trained on and on the unlabelled target, and the scores over the whole lucchi3d test volume.

  python benchmarks/em3d_fit_check.py --data em3d_seg.npz --anisotropy 2.5 100
Writes benchmarks/results/em3d_fit_check.json (one entry per anisotropy).
"""
import argparse, json, sys, time
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

def check(data, aniso:float, method='source_only', seed=0)->dict:
    import torch
    from fastai.torch_core import set_seed
    from em3d_benchmark import seg3d_inputs   # benchmarks/, the script's own folder
    from masktwins_nb.learner3d import volume_dataloaders, masktwins_learner3d, evaluate3d, volume_probability
    from masktwins_nb.models3d import UNet3d
    from masktwins_nb.schedule import fit_iters
    from masktwins_nb.recipe import EM3D
    torch.set_num_threads(1)
    src, tgt, tst_n, _ = seg3d_inputs(data)   # the volumes of em3d_benchmark's seg3d jobs
    tst = tst_n.resample(src.spacing)
    r = EM3D.replace(method=method); set_seed(seed, reproducible=True)
    dls = volume_dataloaders(src, tgt, tst, crop=(r.crop_z, r.crop, r.crop), bs=r.bs, iters_per_epoch=r.iters, seed=seed,
                             device='cpu')
    model = UNet3d(1, 2, r.depth, r.width, anisotropy=aniso)
    learn = masktwins_learner3d(dls, r, model, seed=seed)
    t = time.time()
    with learn.no_bar(), learn.no_logging(): fit_iters(learn, r.iters, lr=r.lr, pct_start=r.pct_start)
    m = learn.model.eval()
    ps, pt = (volume_probability(m, v, None, (8, 128, 128)) for v in (src, tgt))
    with torch.no_grad():   # the same crops of the source through the model in training mode (BatchNorm batch statistics)
        items = [dls.train.dataset[(0, i)] for i in range(8)]
        xb, yb = torch.stack([it[0] for it in items]), torch.stack([it[2] for it in items])
        m.train(); p_train = m(xb).softmax(1)[:, 1]; m.eval(); p_eval = m(xb).softmax(1)[:, 1]
    return dict(anisotropy=aniso, method=method, seed=seed, iters=r.iters, plan=[list(map(list, p)) for p in model.plan],
                seconds=round(time.time() - t), source_fg_pred=float((ps > .5).mean()),
                source_fg_true=float((src.masks == 1).mean()), source_prob_max=float(ps.max()),
                target_fg_pred=float((pt > .5).mean()), test=evaluate3d(m, tst, tst_n, tile=(32, 128, 128)),
                crops=dict(fg_true=float((yb == 1).float().mean()), fg_pred_train_mode=float((p_train > .5).float().mean()),
                           fg_pred_eval_mode=float((p_eval > .5).float().mean()),
                           prob_fg_train_mode=float(p_train[yb == 1].mean()), prob_fg_eval_mode=float(p_eval[yb == 1].mean())))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True); p.add_argument('--anisotropy', type=float, nargs='+', default=[2.5, 100.])
    p.add_argument('--out', default=str(REPO/'benchmarks'/'results'/'em3d_fit_check.json'))
    a = p.parse_args()
    res = [check(a.data, x) for x in a.anisotropy]
    Path(a.out).write_text(json.dumps(dict(runs=res), indent=1)); print(json.dumps(res, indent=1))
