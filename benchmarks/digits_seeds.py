"""How much of a digits result is the seed? Runs on a validation split, not the test images.

  python benchmarks/digits_seeds.py                      # class 8, seeds 0 1 2 (~2.5 min)
  python benchmarks/digits_seeds.py --classes=3,8 --seeds=0,1,2,3 -- --config.optim.num_epochs=75

Builds a validation split of scikit-learn's digits from the *training* split only (70%
train, 30% validation, stratified, seeded; the test split the README reports is never
read), writes it as an `arrays` .npz, and runs `launch.py --config=configs/digits.py` on
it for every (class, seed), with any overrides after `--`. Prints per run and per class
the AUROC of eq. (15), its similarity term (13) and the untrained network's (the learning
check), with the mean and standard deviation over seeds, and writes them to --json_out.
Used to choose settings without touching the test images (README "Ablations").
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {'eq15': 'auroc', 'sim': 'auroc_sim', 'untrained': 'auroc_untrained',
        'pixel_knn': 'auroc_pixel_knn'}


def validation_npz(path, image_size=16, seed=1):
    sys.path.insert(0, ROOT)
    from sklearn.model_selection import train_test_split
    from unode_jax.data.registry import load_dataset
    ds = load_dataset('digits', image_size=image_size)
    xt, xv, yt, yv = train_test_split(ds.x_train, ds.y_train, train_size=0.7,
                                      stratify=ds.y_train, random_state=seed)
    np.savez(path, x_train=xt, y_train=yt, x_test=xv, y_test=yv)


def one_run(npz, workdir, normal_class, seed, overrides):
    cmd = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/digits.py',
           f'--workdir={workdir}', '--mode=train_eval', '--config.data.name=arrays',
           f'--config.data.path={npz}', f'--config.data.normal_class={normal_class}',
           f'--config.seed={seed}', '--config.progress_bar=False', *overrides]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(workdir, 'results.json')) as f:
        result = json.load(f)['classes'][str(normal_class)]
    return {name: 100 * result[key] for name, key in KEYS.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--classes', default='8')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--workdir', default=None, help='default: a temporary folder')
    parser.add_argument('--json_out', default=None)
    parser.add_argument('overrides', nargs='*', help='--config.x=y after --')
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix='digits_seeds_')
    os.makedirs(workdir, exist_ok=True)
    npz = os.path.join(workdir, 'digits_validation.npz')
    validation_npz(npz)
    out = {}
    for c in map(int, args.classes.split(',')):
        runs = []
        for s in map(int, args.seeds.split(',')):
            r = one_run(npz, os.path.join(workdir, f'class_{c}_seed_{s}'), c, s, args.overrides)
            runs.append(r)
            print(f'class {c} seed {s}: ' + '  '.join(f'{k} {v:.2f}' for k, v in r.items()),
                  flush=True)
        summary = {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
                   for k in KEYS}
        out[c] = dict(runs=runs, mean_std=summary)
        print(f'class {c} over {len(runs)} seeds: ' + '  '.join(
            f'{k} {m:.2f} +- {sd:.2f}' for k, (m, sd) in summary.items()), flush=True)
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(dict(overrides=args.overrides, classes=out), f, indent=1)


if __name__ == '__main__':
    main()
