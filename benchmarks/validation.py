"""Settings chosen on validation splits of the *training* images, never the test images.

  python benchmarks/validation.py --dataset=digits --classes=8 --seeds=0,1,2
  python benchmarks/validation.py --dataset=fashion_mnist \
      --data_path=/usr/share/datasets/fashion-mnist --config=configs/fashion_mnist_cpu.py \
      --classes=0,2,6 --name=lambda1 -- --config.loss.ce_weight=1

Splits a dataset's training images 70 / 30 (stratified, seeded; the test split the README
reports is never read), writes the split as an `arrays` .npz at the images' own size
(digits 8 px, faces 25 px, Fashion-MNIST 28 px; the run resizes to its data.image_size as
the dataset's own loader would), and runs `launch.py --mode=train_eval` on it for every
(class, seed), with the overrides after `--`. Prints per run and per class the AUROC of
eq. (15), its similarity term (13), the binary term (14), the untrained network's and
pixel kNN's (the learning check), and the run's seconds, with means and standard
deviations over seeds and over classes; --json_out (default <workdir>/<name>.json) keeps
them all. A finished run is read back, not rerun, so a sweep can be resumed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {'eq15': 'auroc', 'sim': 'auroc_sim', 'binary': 'auroc_binary',
        'untrained': 'auroc_untrained', 'pixel_knn': 'auroc_pixel_knn'}
NATIVE_SIZE = {'digits': 8, 'faces': 25, 'fashion_mnist': 28, 'mnist': 28}
DEBIAN_PATH = {'fashion_mnist': '/usr/share/datasets/fashion-mnist'}
DEFAULT_CONFIG = {'digits': 'configs/digits.py', 'faces': 'configs/faces.py',
                  'fashion_mnist': 'configs/fashion_mnist_cpu.py'}


def validation_npz(path, dataset, data_path=None, seed=1, train_size=0.7):
    """Writes the validation split of `dataset`'s training images to path (once)."""
    if os.path.exists(path):
        return
    sys.path.insert(0, ROOT)
    from sklearn.model_selection import train_test_split
    from unode_jax.data.registry import load_dataset
    ds = load_dataset(dataset, image_size=NATIVE_SIZE[dataset], path=data_path)
    xt, xv, yt, yv = train_test_split(ds.x_train, ds.y_train, train_size=train_size,
                                      stratify=ds.y_train, random_state=seed)
    tmp = path + '.tmp.npz'
    np.savez(tmp, x_train=xt, y_train=yt, x_test=xv, y_test=yv)
    os.replace(tmp, path)


def one_run(config, npz, workdir, normal_class, seed, overrides):
    """The AUROCs (%) and seconds of one train_eval run (read back if already done)."""
    results = os.path.join(workdir, 'results.json')
    seconds = None
    if not os.path.exists(results):
        cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), f'--config={config}',
               f'--workdir={workdir}', '--mode=train_eval', '--config.data.name=arrays',
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
    return dict({name: 100 * result[key] for name, key in KEYS.items()}, seconds=seconds)


def summary(runs):
    return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
            for k in KEYS}


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
    parser.add_argument('overrides', nargs='*', help='--config.x=y after --')
    args = parser.parse_args(argv)
    config = args.config or DEFAULT_CONFIG[args.dataset]
    workdir = args.workdir or tempfile.mkdtemp(prefix='validation_')
    os.makedirs(workdir, exist_ok=True)
    npz = os.path.join(workdir, f'{args.dataset}_validation.npz')
    data_path = args.data_path or DEBIAN_PATH.get(args.dataset)
    validation_npz(npz, args.dataset, data_path)
    out, means = {}, []
    for c in map(int, args.classes.split(',')):
        runs = []
        for s in map(int, args.seeds.split(',')):
            r = one_run(config, npz, os.path.join(workdir, args.name, f'class_{c}_seed_{s}'),
                        c, s, args.overrides)
            runs.append(r)
            took = f'  ({r["seconds"]:.0f} s)' if r['seconds'] else ''
            print(f'{args.name} class {c} seed {s}: ' + '  '.join(
                f'{k} {r[k]:.2f}' for k in KEYS) + took, flush=True)
        out[c] = dict(runs=runs, mean_std=summary(runs))
        means.append({k: m for k, (m, _) in out[c]['mean_std'].items()})
        print(f'{args.name} class {c} over {len(runs)} seed(s): ' + '  '.join(
            f'{k} {m:.2f} +- {sd:.2f}' for k, (m, sd) in out[c]['mean_std'].items()), flush=True)
    overall = summary(means)
    print(f'{args.name} mean over {len(means)} classes: ' + '  '.join(
        f'{k} {m:.2f} (std {sd:.2f})' for k, (m, sd) in overall.items()), flush=True)
    with open(args.json_out or os.path.join(workdir, f'{args.name}.json'), 'w') as f:
        json.dump(dict(dataset=args.dataset, config=config, overrides=args.overrides,
                       classes=out, mean=overall), f, indent=1)
    return overall


if __name__ == '__main__':
    main()
