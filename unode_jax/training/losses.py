"""UNODE losses: the paper's contrastive loss (eq. 9-11), the authors' NT-Xent, and CE (eq. 12).

Every loss here returns one device's *contribution* to the global-batch loss, so
that `lax.psum` of the contributions over devices is the loss of one device on the
whole global batch (and so is `psum` of their gradients). Without an axis name the
contribution is the whole loss.
"""
import jax
import jax.numpy as jnp
from jax import lax

LOSS_KINDS = ('paper', 'authors')


def l2_normalize(x, eps=1e-12):
    return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def _gather(x, axis_name):
    """All rows of the global batch, and the global index of this device's first row."""
    if axis_name is None:
        return x, 0
    return lax.all_gather(x, axis_name, tiled=True), lax.axis_index(axis_name) * x.shape[0]


def paper_contrastive(z1, z2, zn1, zn2, temperature, axis_name=None):
    """Eq. (9)-(11): inlier anchors t_i and t'_i, each other's positive.

    The negatives of x_i are both views of the hard-augmented images of the *other*
    inliers, N_i = {t(G(x_j)), t'(G(x_j)) : j != i}, eq. (10). The positive also sits
    in the denominator (P u N in eq. 9). L = 1/|B| sum_i (l(t_i) + l(t'_i)), eq. (11).
    z1, z2: projections of the two inlier views (b, d); zn1, zn2: of the negatives' views.
    """
    b = z1.shape[0]
    z1, z2, zn1, zn2 = (l2_normalize(z.astype(jnp.float32)) for z in (z1, z2, zn1, zn2))
    gn1, offset = _gather(zn1, axis_name)
    gn = jnp.concatenate([gn1, _gather(zn2, axis_name)[0]])
    n_global = gn1.shape[0]
    own = offset + jnp.arange(b)
    # Mask out x_i's own negatives: column j of gn (mod the global batch) is image j.
    own_neg = (jnp.arange(2 * n_global)[None, :] % n_global) == own[:, None]

    def one_side(anchor, positive):
        pos = jnp.sum(anchor * positive, axis=-1) / temperature
        neg = jnp.where(own_neg, -jnp.inf, anchor @ gn.T / temperature)
        denom = jax.nn.logsumexp(jnp.concatenate([pos[:, None], neg], axis=1), axis=1)
        return denom - pos

    loss = one_side(z1, z2) + one_side(z2, z1)
    return jnp.sum(loss) / n_global


def ntxent(blocks, temperature, axis_name=None):
    """SimCLR's NT-Xent over the rows of 2m blocks of b rows each (one device's part).

    Row r of block k pairs with row r of block k + m (mod 2m); every other row of every
    block is a negative. Loss = mean over the 2m * G global rows.
    """
    b = blocks[0].shape[0]
    gathered = [_gather(l2_normalize(z.astype(jnp.float32)), axis_name) for z in blocks]
    offset = gathered[0][1]
    rows = jnp.concatenate([g for g, _ in gathered])  # (2m G, d)
    n_global = gathered[0][0].shape[0]
    total = len(blocks) * n_global
    local = jnp.concatenate([k * n_global + offset + jnp.arange(b) for k in range(len(blocks))])
    partner = (local + total // 2) % total
    sim = rows[local] @ rows.T / temperature
    sim = jnp.where(jnp.arange(total)[None, :] == local[:, None], -jnp.inf, sim)
    loss = jax.nn.logsumexp(sim, axis=1) - jnp.take_along_axis(sim, partner[:, None], axis=1)[:, 0]
    return jnp.sum(loss) / total


def authors_ntxent(z1, zn1, z2, zn2, temperature, axis_name=None):
    """The authors' code: SimCLR NT-Xent over all 4B rows [o1, n1, o2, n2].

    Row r's positive is row r + 2B (mod 4B): each inlier's two views, and each
    negative's two views, form a pair; every other row, other inliers included, is a
    negative. Loss = mean over the 4B rows.
    """
    return ntxent([z1, zn1, z2, zn2], temperature, axis_name)


def inlier_ntxent(z1, z2, temperature, axis_name=None):
    """Table 4's "None": no hard negatives, SimCLR's NT-Xent over the 2B inlier views (each
    image's two views a pair, the other inliers' views its negatives)."""
    return ntxent([z1, z2], temperature, axis_name)


def contrastive_loss(kind, z1, z2, zn1, zn2, temperature, axis_name=None):
    if kind == 'paper':
        return paper_contrastive(z1, z2, zn1, zn2, temperature, axis_name)
    if kind == 'authors':
        return authors_ntxent(z1, zn1, z2, zn2, temperature, axis_name)
    raise ValueError(f'loss.kind must be one of {LOSS_KINDS}, got {kind!r}')


def cross_entropy(logits, labels, n_global_rows):
    """Eq. (12) as a negative log-likelihood, averaged over the global rows.

    The paper writes eq. (12) as a sum of log-probabilities; we take the mean NLL so
    that lambda = 1 means the same thing at every batch size.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    return jnp.sum(nll) / n_global_rows
