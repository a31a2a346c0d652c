"""Settings chosen on validation splits of the *training* images, never the test images.

  python benchmarks/validation.py --dataset=digits --classes=8 --seeds=0,1,2
  python benchmarks/validation.py --dataset=fashion_mnist \
      --data_path=/usr/share/datasets/fashion-mnist --config=configs/fashion_mnist_cpu.py \
      --classes=0,2,6 --name=lambda1 -- --config.loss.ce_weight=1
  python benchmarks/validation.py --dataset=fashion_mnist --classes=0,4,8 --seeds=0,1,2 \
      --name=copies --eval_of=base -- --config.score.copies="('rotation',)"

Splits a dataset's training images 70 / 30 (stratified, seeded; the test split the README
reports is never read), writes the split as an `arrays` .npz at the images' own size
(digits 8 px, faces 25 px, Fashion-MNIST 28 px; the run resizes to its data.image_size as
the dataset's own loader would), and runs `launch.py --mode=train_eval` on it for every
(class, seed), with the overrides after `--`. The textures' training patches overlap (a
grid of stride 8), so their split is spatial instead: each texture's training region's
left 104 columns train, its right 56 validate, no pixel shared (290 and 116 patches a
class). --eval_of=NAME scores the models variant NAME trained with other evaluation
settings (`--mode=eval`, no training; the overrides must keep NAME's training fields):
the test-time levers cost a forward pass, not a run. --shares re-weights eq. (15) from a
run's saved terms: lambda = share * std(sim) / std(binary) is linear in
score.spread_share, so each share's AUROC is exact without rescoring. --seed_ensemble adds
per class the AUROC of the mean of the seeds' eq. (15) scores (one detector made of
len(seeds) models). Prints per run and per class the AUROC of
eq. (15), its similarity term (13), the binary term (14), the untrained network's and
pixel kNN's (the learning check), and the run's seconds, with means and standard
deviations over seeds and over classes; --json_out (default <workdir>/<name>.json) keeps
them all. A finished run is read back, not rerun, so a sweep can be resumed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {'eq15': 'auroc', 'sim': 'auroc_sim', 'binary': 'auroc_binary',
        'untrained': 'auroc_untrained', 'pixel_knn': 'auroc_pixel_knn'}
NATIVE_SIZE = {'digits': 8, 'faces': 25, 'fashion_mnist': 28, 'mnist': 28, 'textures': 32}
DEBIAN_PATH = {'fashion_mnist': '/usr/share/datasets/fashion-mnist'}
DEFAULT_CONFIG = {'digits': 'configs/digits.py', 'faces': 'configs/faces.py',
                  'fashion_mnist': 'configs/fashion_mnist_cpu.py',
                  'textures': 'configs/textures.py'}
TEXTURE_SPLIT = 104  # Of a texture's 160 training columns: [0, 104) train, [104, 160) validate.


def validation_npz(path, dataset, data_path=None, seed=1, train_size=0.7):
    """Writes the validation split of `dataset`'s training images to path (once)."""
    if os.path.exists(path):
        return
    sys.path.insert(0, ROOT)
    if dataset == 'textures':
        xt, yt, xv, yv = texture_split()
    else:
        from sklearn.model_selection import train_test_split
        from unode_jax.data.registry import load_dataset
        ds = load_dataset(dataset, image_size=NATIVE_SIZE[dataset], path=data_path)
        xt, xv, yt, yv = train_test_split(ds.x_train, ds.y_train, train_size=train_size,
                                          stratify=ds.y_train, random_state=seed)
    tmp = path + '.tmp.npz'
    np.savez(tmp, x_train=xt, y_train=yt, x_test=xv, y_test=yv)
    os.replace(tmp, path)


def texture_split():
    """(x_train, y_train, x_val, y_val) of the textures' training regions, split by columns
    (module docstring): gray uint8 32 x 32 patches, no pixel in both."""
    from unode_jax.data import textures
    folder = textures.skimage_data_dir()
    parts = [[], [], [], []]
    for label, file in enumerate(textures.TEXTURES.values()):
        image = textures.read_texture(folder / file)
        for i, x in enumerate((textures.cut(image, 0, TEXTURE_SPLIT),
                               textures.cut(image, TEXTURE_SPLIT, textures.TRAIN_COLUMNS))):
            parts[2 * i].append(x)
            parts[2 * i + 1].append(np.full(len(x), label, np.int64))
    return tuple(np.concatenate(p) for p in parts)


def link_trained(source, workdir):
    """workdir scores source's trained model: its checkpoints (linked), config.json and
    AutoAugOOD weights (copied); launch.py --mode=eval then checks the training fields."""
    os.makedirs(workdir, exist_ok=True)
    link = os.path.join(workdir, 'checkpoints')
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(source, 'checkpoints')), link)
    for name in ('config.json', 'autoaug.json'):
        if os.path.exists(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(workdir, name))


def one_run(config, npz, workdir, normal_class, seed, overrides, trained=None):
    """The AUROCs (%) and seconds of one train_eval run (read back if already done); with
    trained (a run's folder), --mode=eval of its model, no baselines."""
    results = os.path.join(workdir, 'results.json')
    seconds = None
    if not os.path.exists(results):
        mode = '--mode=train_eval'
        if trained:
            if not os.path.exists(os.path.join(trained, 'results.json')):
                sys.exit(f'--eval_of: {trained} holds no finished run: run that variant first')
            link_trained(trained, workdir)
            mode, overrides = '--mode=eval', [*overrides, '--config.score.baselines=()']
        cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), f'--config={config}',
               f'--workdir={workdir}', mode, '--config.data.name=arrays',
               f'--config.data.path={npz}', f'--config.data.normal_class={normal_class}',
               f'--config.seed={seed}', '--config.progress_bar=False',
               '--config.report.paper_auroc=()', *overrides]  # Test-set numbers: not here.
        t0 = time.time()
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
        if r.returncode:
            sys.exit(f'{" ".join(cmd)} failed: {r.stderr.strip()[-2000:]}')
        seconds = time.time() - t0
    with open(results) as f:
        result = json.load(f)['classes'][str(normal_class)]
    return dict({name: 100 * result.get(key, np.nan) for name, key in KEYS.items()},
                seconds=seconds, weight=result['balance_weight'],
                share=result.get('spread_share'), scores=os.path.join(workdir, 'scores.npz'))


def summary(runs, keys=KEYS):
    return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
            for k in keys}


def shared_aurocs(run, shares):
    """eq. (15)'s AUROC (%) at each spread share, from the run's saved terms: lambda is
    share / run's share times the run's (score.spread_weight is linear in the share)."""
    from sklearn.metrics import roc_auc_score
    with np.load(run['scores']) as f:
        sim, binary, normal = f['sim'], f['binary'], f['is_normal']
    return {f'share_{a:g}': 100 * roc_auc_score(normal, sim + run['weight'] * a / run['share']
                                                 * binary) for a in shares}


def seed_ensemble_auroc(runs):
    """AUROC (%) of the mean over the runs (seeds) of their eq. (15) scores."""
    from sklearn.metrics import roc_auc_score
    scores, normal = [], None
    for r in runs:
        with np.load(r['scores']) as f:
            scores.append(f['score'])
            normal = f['is_normal']
    return 100 * roc_auc_score(normal, np.mean(scores, axis=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='digits', choices=sorted(NATIVE_SIZE))
    parser.add_argument('--data_path', default=None,
                        help='mnist / fashion_mnist: an idx folder (fashion_mnist: '
                             'default Debian\'s /usr/share/datasets/fashion-mnist)')
    parser.add_argument('--config', default=None, help='default: the dataset\'s CPU config')
    parser.add_argument('--classes', default='8')
    parser.add_argument('--seeds', default='0')
    parser.add_argument('--name', default='base', help='this variant\'s folder in --workdir')
    parser.add_argument('--workdir', default=None, help='default: a temporary folder')
    parser.add_argument('--json_out', default=None)
    parser.add_argument('--eval_of', default=None,
                        help='score this variant\'s trained models (--mode=eval) instead of '
                             'training')
    parser.add_argument('--shares', default='',
                        help='spread shares to re-weight eq. (15) with, e.g. 0.1,1,2,3')
    parser.add_argument('--seed_ensemble', action='store_true',
                        help='also the AUROC of the mean of the seeds\' scores')
    parser.add_argument('overrides', nargs='*', help='--config.x=y after --')
    args = parser.parse_args(argv)
    config = args.config or DEFAULT_CONFIG[args.dataset]
    workdir = args.workdir or tempfile.mkdtemp(prefix='validation_')
    os.makedirs(workdir, exist_ok=True)
    npz = os.path.join(workdir, f'{args.dataset}_validation.npz')
    data_path = args.data_path or DEBIAN_PATH.get(args.dataset)
    validation_npz(npz, args.dataset, data_path)
    shares = [float(a) for a in args.shares.split(',') if a]
    out, means = {}, []
    keys = list(KEYS)
    for c in map(int, args.classes.split(',')):
        runs = []
        for s in map(int, args.seeds.split(',')):
            folder = f'class_{c}_seed_{s}'
            trained = args.eval_of and os.path.join(workdir, args.eval_of, folder)
            r = one_run(config, npz, os.path.join(workdir, args.name, folder), c, s,
                        args.overrides, trained)
            r.update(shared_aurocs(r, shares))
            runs.append(r)
            keys = list(KEYS) + [k for k in r if k.startswith('share_')]
            took = f'  ({r["seconds"]:.0f} s)' if r['seconds'] else ''
            print(f'{args.name} class {c} seed {s}: ' + '  '.join(
                f'{k} {r[k]:.2f}' for k in keys) + took, flush=True)
        out[c] = dict(runs=runs, mean_std=summary(runs, keys))
        if args.seed_ensemble:
            out[c]['mean_std']['seed_ensemble'] = (seed_ensemble_auroc(runs), 0.0)
        means.append({k: m for k, (m, _) in out[c]['mean_std'].items()})
        print(f'{args.name} class {c} over {len(runs)} seed(s): ' + '  '.join(
            f'{k} {m:.2f} +- {sd:.2f}' for k, (m, sd) in out[c]['mean_std'].items()), flush=True)
    overall = summary(means, list(means[0]))
    print(f'{args.name} mean over {len(means)} classes: ' + '  '.join(
        f'{k} {m:.2f} (std {sd:.2f})' for k, (m, sd) in overall.items()), flush=True)
    with open(args.json_out or os.path.join(workdir, f'{args.name}.json'), 'w') as f:
        json.dump(dict(dataset=args.dataset, config=config, overrides=args.overrides,
                       classes=out, mean=overall), f, indent=1)
    return overall


if __name__ == '__main__':
    main()
