"""Config checks that fail at once, with one line, before any data or compile work."""
import difflib
import math
import os
import warnings

import numpy as np
from ml_collections import config_dict

from unode_jax.ablation import VARIANT_NAMES
from unode_jax.augment.autoaug import DIVERGENCES, TSNE_BACKENDS
from unode_jax.augment.embedders import EMBEDDERS
from unode_jax.augment.negatives import COMPOSE_MODES, PER, TRANSFORMS
from unode_jax.data.corrupted import CORRUPTION_SOURCES, TFDS_CORRUPTIONS, corruption_source
from unode_jax.data.corruptions import CORRUPTIONS
from unode_jax.data.folders import MVTEC_CATEGORIES
from unode_jax.data.registry import DATASETS, names_with_idx
from unode_jax.data.splits import holdout_split
from unode_jax.evaluation.baselines import BASELINES
from unode_jax.evaluation.copies import COPY_TRANSFORMS
from unode_jax.evaluation.evaluate import ENSEMBLE_VIEWS, FEATURES
from unode_jax.evaluation.precise_bn import BN_STATS
from unode_jax.evaluation.score import BALANCES, LABELED_TERMS, NORM_SCALED
from unode_jax.models import DTYPES, INPUT_NORMS, MODELS, STEM_MODELS, STEMS
from unode_jax.models.torchvision import torchvision_models
from unode_jax.plan import SETTINGS
from unode_jax.runtime.errors import ConfigError
from unode_jax.training.losses import LOSS_KINDS
from unode_jax.models.unode import HEAD_KINDS
from unode_jax.training.optim import OPTIMIZERS

# Every enumerated config field and where its values are defined (by the code that
# implements them); configs/default.py documents each (tests/test_config.py checks it
# names every value, or the table).
CHOICES = {
    'data.name': DATASETS, 'data.setting': SETTINGS,
    'model.name': MODELS, 'model.dtype': DTYPES, 'model.input_norm': INPUT_NORMS,
    'loss.kind': LOSS_KINDS, 'optim.name': OPTIMIZERS,
    'score.balance': BALANCES, 'score.bn_stats': BN_STATS, 'score.features': FEATURES,
    'score.labeled_term': LABELED_TERMS, 'score.ensemble_views': ENSEMBLE_VIEWS,
    'head.kind': HEAD_KINDS,
    'negatives.mode': COMPOSE_MODES, 'negatives.per': PER,
    'autoaug.embedder': EMBEDDERS, 'autoaug.tsne': TSNE_BACKENDS,
    'autoaug.divergence': DIVERGENCES, 'autoaug.random_cnn': MODELS,
    'corruptions.source': CORRUPTION_SOURCES,
}
# Fields whose value is a tuple of choices, and optional fields (None allowed).
ENTRY_CHOICES = {'ablation.variants': VARIANT_NAMES, 'score.baselines': BASELINES,
                 'negatives.transforms': TRANSFORMS,
                 'score.copies': COPY_TRANSFORMS}
OPTIONAL_CHOICES = {'model.stem': STEMS}


def _one_of(name, value, allowed, hint=''):
    if value not in allowed:
        raise ConfigError(f'{name}={value!r} is not one of {tuple(allowed)}{hint}')


def _field(config, dotted):
    for part in dotted.split('.'):
        config = config[part]
    return config


def validate_config(config, *, num_classes=None, num_devices=None):
    """Raises ConfigError naming the bad field. Dataset-dependent checks need num_classes."""
    _check_finite(config)
    for field, allowed in CHOICES.items():
        _one_of(field, _field(config, field), allowed)
    for field, allowed in ENTRY_CHOICES.items():
        for v in _field(config, field):
            # --config.x=a,b arrives as the one entry 'a,b': say how a tuple is written.
            hint = (f'; a tuple is written --config.{field}="(\'a\',\'b\')"'
                    if isinstance(v, str) and ',' in v else '')
            _one_of(f'{field} entry', v, allowed, hint)
    for field, allowed in OPTIONAL_CHOICES.items():
        if _field(config, field) is not None:
            _one_of(field, _field(config, field), allowed)
    if config.model.stem is not None:
        _one_of('model.name (with model.stem)', config.model.name, STEM_MODELS)
    a = config.autoaug
    for name, value, low in (('tau', a.tau, 0), ('perplexity', a.perplexity, 0),
                             ('pca_dim', a.pca_dim, 0), ('grid_size', a.grid_size, 15),
                             ('pixels_size', a.pixels_size, 0), ('batch_size', a.batch_size, 0)):
        if not value > low:
            raise ConfigError(f'autoaug.{name} must be > {low}, got {value!r}')
    if a.num_images < 0 or 0 < a.num_images < 10:
        raise ConfigError(f'autoaug.num_images must be 0 (all) or >= 10, got {a.num_images}')
    _check_settings(config)
    _check_head_and_copies(config)
    _check_paper_auroc(config, num_classes)
    _check_corruptions(config)
    if config.corruptions.severity not in (1, 2, 3, 4, 5):
        raise ConfigError(f'corruptions.severity must be 1..5, got {config.corruptions.severity}')
    _check_data(config.data)
    _check_pretrained(config)
    positive = {'batch_size': config.batch_size, 'data.image_size': config.data.image_size,
                'log_every': config.log_every, 'checkpoint_every': config.checkpoint_every,
                'keep_checkpoints': config.keep_checkpoints,
                'score.batch_size': config.score.batch_size,
                'score.ensemble': config.score.ensemble,
                'score.spread_share': config.score.spread_share,
                'loss.temperature': config.loss.temperature,
                'optim.num_epochs': config.optim.num_epochs}
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f'{name} must be positive, got {value!r}')
    if config.data.device_budget_mb < 0:
        raise ConfigError('data.device_budget_mb must be >= 0 (0: always stream from host)')
    weights = (config.loss.con_weight, config.loss.ce_weight)
    if min(weights) < 0 or max(weights) <= 0:
        raise ConfigError(f'loss.con_weight and loss.ce_weight must be >= 0 and not both 0, '
                          f'got {weights[0]!r} and {weights[1]!r}')
    if config.optim.warmup_epochs < 0:
        raise ConfigError('optim.warmup_epochs must be >= 0')
    if config.negatives.max_compose < 0:
        raise ConfigError('negatives.max_compose must be >= 0 (0: all weighted transforms)')
    lo, hi = config.negatives.mixup_lam
    if not 0 <= lo <= hi <= 1:
        raise ConfigError(f'negatives.mixup_lam must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}')
    if not 0 < config.score.crop_area <= 1:
        raise ConfigError(f'score.crop_area must be in (0, 1], got {config.score.crop_area}')
    if num_devices is not None and config.batch_size % num_devices:
        raise ConfigError(f'batch_size={config.batch_size} is not divisible by the {num_devices} '
                          f'local devices')
    if num_classes is not None and not -1 <= config.data.normal_class < num_classes:
        raise ConfigError(f'data.normal_class={config.data.normal_class} is out of range: '
                          f'{config.data.name} has classes 0..{num_classes - 1} (-1: all)')


def training_groups(config, y_train, class_names, classes=None):
    """[(what, number of training images)] of each model the run makes (one per class of a
    one-class run, one for the inlier classes of a multi-class run); --classes checked."""
    d = config.data
    counts = np.bincount(y_train, minlength=len(class_names))
    if classes and (d.setting != 'one_class' or d.normal_class >= 0):
        raise ConfigError('--classes picks the classes of a one-class sweep: it needs '
                          "data.setting='one_class' and data.normal_class=-1")
    bad = [k for k in classes or () if not 0 <= k < len(counts)]
    if bad:
        raise ConfigError(f'--classes: {d.name} has classes 0..{len(counts) - 1}, got {bad}')
    if d.setting == 'one_class':
        todo = [d.normal_class] if d.normal_class >= 0 else (classes or range(len(counts)))
        groups = [(f'{d.name}: class {k} ({class_names[k]})', int(counts[k])) for k in todo]
    else:
        inliers = list(d.inlier_classes or range(len(counts)))
        groups = [(f'{d.name}: the inlier classes', int(counts[inliers].sum()))]
    return groups


def check_group_sizes(config, groups, training=True, flag='--config.batch_size'):
    """Each (what, number of training images) of groups has images and, when training, at
    least batch_size of them once predict.holdout's are set aside; `flag` is how the user
    sets batch_size (the command line's flag, or the Python API's keyword)."""
    for what, n in groups:
        if n == 0:
            raise ConfigError(f'{what} has no training images')
        n_fit = len(holdout_split(n, config.predict.holdout, config.seed)[0])
        if training and n_fit < config.batch_size:
            held = f' ({n - n_fit} held out by predict.holdout)' if n_fit < n else ''
            raise ConfigError(f'{what} has {n_fit} training images{held}, fewer than '
                              f'batch_size={config.batch_size}: lower {flag} to at most '
                              f'{n_fit}')


def _check_finite(config, prefix=''):
    """No field holds nan or inf (a learning rate of nan would train to a non-finite loss)."""
    for key, value in config.items():
        name = f'{prefix}{key}'
        if isinstance(value, config_dict.ConfigDict):
            _check_finite(value, f'{name}.')
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f'{name}={value!r}: not a finite number')


def _check_data(d):
    """The data fields that do not need the dataset: paths, preparation, folder options."""
    kind = DATASETS[d.name].kind
    if kind == 'file' and not d.path:
        raise ConfigError(f"data.name={d.name!r} needs --config.data.path=FILE.npz")
    if kind == 'folder' and not d.path:
        raise ConfigError(f"data.name={d.name!r} reads an image folder: pass its root with "
                          '--config.data.path=DIR')
    if kind == 'tfds' and d.path and DATASETS[d.name].idx_classes is None:
        raise ConfigError(f'data.path is not read for data.name={d.name!r} (a tfds dataset; '
                          f'a folder of idx files is read for {", ".join(names_with_idx())})')
    if d.resize is not None and not (isinstance(d.resize, int) and d.resize >= d.image_size):
        raise ConfigError(f'data.resize must be None or an int >= data.image_size '
                          f'({d.image_size}), got {d.resize!r}')
    if d.isic_holdout is not None and not 0 < d.isic_holdout < 1:
        raise ConfigError(f'data.isic_holdout must be None or in (0, 1), got {d.isic_holdout}')
    unknown = [c for c in d.categories if c not in MVTEC_CATEGORIES]
    if d.categories and (d.name != 'mvtec' or unknown or len(set(d.categories))
                         != len(d.categories)):
        raise ConfigError(f'data.categories names distinct MVTecAD categories of '
                          f'{MVTEC_CATEGORIES} (data.name=mvtec), got {tuple(d.categories)}')
    dirs = (d.anomaly_dirs,) if isinstance(d.anomaly_dirs, str) else tuple(d.anomaly_dirs)
    if not dirs or any(not isinstance(n, str) or not n or '/' in n or n in ('normal', '.', '..')
                       for n in dirs):
        raise ConfigError(f'data.anomaly_dirs must be folder names under test/ other than '
                          f'normal, got {d.anomaly_dirs!r}')


def _check_settings(config):
    d = config.data
    if d.setting != 'one_class':
        if not d.outlier_sets:
            raise ConfigError(f"data.setting={d.setting!r} needs data.outlier_sets, e.g. "
                              "--config.data.outlier_sets=\"('svhn','mnist')\"")
        if d.setting == 'labeled' and config.score.balance == 'authors':
            raise ConfigError("score.balance='authors' is defined for the binary head only "
                              "(data.setting='labeled' has a (K+1)-way head)")
        if d.setting == 'labeled' and len(d.inlier_classes) == 1:
            raise ConfigError('data.setting=labeled needs at least 2 inlier classes')
    p = config.predict
    if not 0 <= p.holdout <= 0.5:
        raise ConfigError(f'predict.holdout must be in [0, 0.5], got {p.holdout}')
    if not 0 < p.quantile < 1:
        raise ConfigError(f'predict.quantile must be in (0, 1), got {p.quantile}')


def _check_head_and_copies(config):
    """head.kind, score.copies and score.knn_k: what each needs of the rest of the config."""
    s, n = config.score, config.negatives
    if not (isinstance(s.knn_k, int) and s.knn_k >= 1):
        raise ConfigError(f'score.knn_k must be an integer >= 1, got {s.knn_k!r}')
    plain = not s.copies and s.knn_k == 1
    if not plain and s.balance in NORM_SCALED:
        raise ConfigError(f'score.balance={s.balance!r} scores one view with the nearest '
                          'neighbour: drop score.copies and score.knn_k, or use spread')
    missing = [t for t in s.copies if t not in n.transforms]
    if missing:
        raise ConfigError(f'score.copies {missing} are not among negatives.transforms')
    if len(set(s.copies)) != len(s.copies):
        raise ConfigError(f'score.copies names a transform twice: {tuple(s.copies)}')
    if s.copies and (n.weights == 'none' or config.data.setting == 'labeled'):
        raise ConfigError('score.copies needs hard negatives (negatives.weights other than none) '
                          "and the binary or transform head (data.setting other than labeled)")
    if config.views.num_views not in (1, 2):
        raise ConfigError(f'views.num_views must be 1 or 2, got {config.views.num_views!r}')
    if config.views.num_views == 1 and (config.loss.con_weight != 0 or n.weights == 'none'):
        raise ConfigError('views.num_views=1 drops the pair L_con needs: it takes '
                          'loss.con_weight=0 and hard negatives')
    if config.head.kind == 'transform':
        if n.weights == 'none' or config.data.setting == 'labeled':
            raise ConfigError("head.kind='transform' needs hard negatives and data.setting "
                              "other than labeled")
        if n.mode == 'compose' and n.max_compose != 1:
            raise ConfigError("head.kind='transform' names the one transform of each negative: "
                              "set negatives.max_compose=1 (or negatives.mode=single)")
        if s.balance == 'authors':
            raise ConfigError("score.balance='authors' is defined for the binary head only")


def _check_paper_auroc(config, num_classes):
    """report.paper_auroc: the paper's AUROC (%) of each class; its length needs the data."""
    d, paper = config.data, tuple(config.report.paper_auroc)
    if not paper:
        return
    if d.setting != 'one_class':
        raise ConfigError(f'report.paper_auroc is per normal class (data.setting=one_class), '
                          f'not data.setting={d.setting!r}: set --config.report.paper_auroc=()')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100
               for v in paper):
        raise ConfigError(f'report.paper_auroc holds AUROCs in percent, each in [0, 100], '
                          f'got {paper}')
    if num_classes is not None and len(paper) != num_classes:
        raise ConfigError(f'report.paper_auroc has {len(paper)} entries but {d.name} has '
                          f'{num_classes} classes: one AUROC per class, in class order')


def _check_corruptions(config):
    c = config.corruptions
    source = corruption_source(config.data.name, c.source)
    if source == 'tfds':
        if config.data.name not in TFDS_CORRUPTIONS:
            raise ConfigError(f"corruptions.source='tfds': tfds has corrupted test sets for "
                              f"{tuple(TFDS_CORRUPTIONS)} only, not {config.data.name!r}; "
                              "use source='ours'")
        allowed = TFDS_CORRUPTIONS[config.data.name]
    else:
        allowed = CORRUPTIONS
    for name in c.names:
        _one_of(f'corruptions.names entry ({source})', name, allowed)


def _check_pretrained(config):
    path = config.model.pretrained
    if not path:
        if config.optim.freeze_prefixes and config.optim.unfreeze_step > 0:
            warnings.warn('optim.freeze_prefixes is set but model.pretrained is not: those '
                          'layers stay at their random init until optim.unfreeze_step',
                          stacklevel=3)
        return
    if not os.path.isfile(path):
        raise ConfigError(f'model.pretrained={path!r}: no such file (torchvision .pth files: '
                          'see "Pretrained backbones" in docs/datasets.md)')
    _one_of('model.name (with model.pretrained)', config.model.name, torchvision_models())
    if config.model.stem == 'cifar':
        raise ConfigError("model.stem='cifar' cannot load model.pretrained: ImageNet weights "
                          "have the 7x7 stem (use model.stem='imagenet' or 'imagenet_224')")
    if config.model.input_norm != 'imagenet':
        # Not an error: other normalisations are a legitimate ablation.
        warnings.warn(f'model.pretrained with model.input_norm={config.model.input_norm!r}: '
                      "torchvision's weights expect input_norm='imagenet'", stacklevel=3)


def _field_names(config, prefix=''):
    for key, value in config.items():
        name = f'{prefix}{key}'
        yield name
        if isinstance(value, config_dict.ConfigDict):
            yield from _field_names(value, f'{name}.')


def unknown_override(argv, config):
    """The first `--config.<field>=...` of argv naming no field of config, as one line with
    the nearest field names; None when every override names a field."""
    for arg in argv[1:]:
        if not arg.startswith('--config.'):
            continue
        field = arg[len('--config.'):].split('=', 1)[0]
        node = config
        for part in field.split('.'):
            if not isinstance(node, config_dict.ConfigDict) or part not in node:
                near = difflib.get_close_matches(field, list(_field_names(config)), n=3)
                hint = f'; nearest: {", ".join(near)}' if near else ''
                return f'--config.{field}: no such field in the config{hint}'
            node = node[part]
    return None
