"""Exact path-dependent TreeSHAP for LightGBM boosters (Fast TreeSHAP v2, compiled with numba).

This is the algorithm behind :func:`pes_ml.explain.shap_values`; nothing else in
the package should call it (STYLE: only ``explain`` computes SHAP).

What is computed
----------------
The same numbers as LightGBM's ``booster.predict(X, pred_contrib=True)`` and
``shap.TreeExplainer(booster).shap_values(X)``: path-dependent ("tree_path_dependent")
TreeSHAP of the raw score (log-odds for a binary model), where a feature that is
"absent" follows every branch weighted by the training data counts of the nodes.

How (Fast TreeSHAP v2, Yang 2021, arXiv:2109.09847)
--------------------------------------------------
For one leaf ``l`` with value ``v``, let ``P`` be the distinct features split on
along its root-to-leaf path (``n = |P|``), ``r_j`` the product of the cover ratios
``count(child) / count(node)`` of the splits on feature ``j`` along that path, and
``O(x) ⊆ P`` the features whose every split on the path sends ``x`` the path's way.
Path-dependent TreeSHAP of that leaf is::

    phi_i = v (o_i - r_i) sum_{S ⊆ O \\ {i}} w(|S|, n) prod_{j in P \\ S \\ {i}} r_j,
    w(k, n) = k! (n - k - 1)! / n!

which factorises, with ``R(O) = prod_{j in P \\ O} r_j`` and
``H(U) = sum_{S ⊆ U} w(|S|, n) prod_{j in U \\ S} r_j``, into::

    i in O:      phi_i = +v (1 - r_i) R(O) H(O \\ {i})
    i not in O:  phi_i = -v R(O) H(O)

``v * H(U)`` depends on the leaf and the subset ``U`` only, so it is tabulated once
per model for every subset (``2**n`` numbers per leaf, filled from elementary
symmetric polynomials of the ``r_j``). Explaining a row then costs, per tree, one
decision per internal node plus ``O(path length)`` work per leaf — instead of the
``O(L D^2)`` extend/unwind recursion of classic TreeSHAP — with no division, so a
zero cover ratio is handled exactly. Rows are processed in blocks, tree by tree, so
a tree's tables stay in cache while a block streams through, and blocks run in
parallel on every core (``numba.prange``).

Trees whose longest path has more than :data:`MAX_FAST_PATH_FEATURES` distinct
features (``2**n`` gets large), and any trees past the table memory budget, fall back
to LightGBM's own C++ TreeSHAP (``pred_contrib`` for just those iterations), which
computes the same quantity.

The split decisions mirror LightGBM's ``Tree::NumericalDecision`` and
``Tree::CategoricalDecision`` exactly (``<=`` thresholds, missing type None / Zero /
NaN with the default direction, categorical bitsets, NaN and negative categories go
right).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

logger = logging.getLogger(__name__)

MAX_FAST_PATH_FEATURES = 16
"""Paths with more distinct features than this are explained by LightGBM's own TreeSHAP."""

DEFAULT_TABLE_BUDGET_BYTES = 1 << 30
"""Memory allowed for the per-leaf subset tables of one model (1 GiB)."""

ROW_BLOCK = 128
"""Rows explained together, tree by tree, so that a tree's tables stay in cache."""

# LightGBM's kZeroThreshold is the float literal 1e-35f, compared as a double.
_ZERO_THRESHOLD = float(np.float32(1e-35))
_INT_MAX = 2147483647.0


@dataclass(frozen=True)
class PackedModel:
    """A LightGBM booster flattened into arrays for the compiled kernels.

    Node indices are per tree (``tree_node_start`` gives each tree's offset into the
    node arrays); leaves, path entries, slots (distinct path features) and tables
    are global.
    """

    n_features: int
    n_trees: int
    fast_trees: np.ndarray  # int64 ids of the trees explained by the v2 kernel
    fallback_trees: np.ndarray  # int64 ids of the trees left to LightGBM's pred_contrib
    base_value_fast: float  # expected value of the fast trees and single-leaf trees
    tree_node_start: np.ndarray
    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_decision: np.ndarray
    node_cat_start: np.ndarray
    node_cat_len: np.ndarray
    cat_bits: np.ndarray
    tree_leaf_start: np.ndarray
    leaf_path_start: np.ndarray
    path_node: np.ndarray
    path_left: np.ndarray
    path_slot: np.ndarray
    leaf_slot_start: np.ndarray
    slot_feature: np.ndarray
    slot_r: np.ndarray
    leaf_value: np.ndarray
    leaf_table_start: np.ndarray
    tables: np.ndarray
    max_nodes: int

    @property
    def table_bytes(self) -> int:
        """Memory held by the subset tables."""
        return int(self.tables.nbytes)


@dataclass
class _Tree:
    """One tree of the model text, as LightGBM stores it (children < 0 are leaves ``~child``)."""

    num_leaves: int
    split_feature: np.ndarray
    threshold: np.ndarray
    decision_type: np.ndarray
    left_child: np.ndarray
    right_child: np.ndarray
    leaf_value: np.ndarray
    leaf_count: np.ndarray
    internal_count: np.ndarray
    cat_boundaries: np.ndarray
    cat_threshold: np.ndarray


def _parse_trees(model_text: str) -> tuple[int, list[_Tree]]:
    """Read the trees out of ``booster.model_to_string()`` (exact: 17 significant digits)."""
    header, _, body = model_text.partition("\nTree=")
    fields = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
    n_features = int(fields["max_feature_idx"]) + 1
    body = "Tree=" + body.split("end of trees", 1)[0]
    trees: list[_Tree] = []
    for block in body.split("Tree=")[1:]:
        kv = dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
        if kv.get("is_linear", "0") != "0":
            raise ValueError("linear trees (linear_tree=True) have no TreeSHAP explanation")
        num_leaves = int(kv["num_leaves"])

        def arr(key: str, dtype: type, kv: dict[str, str] = kv) -> np.ndarray:
            text = kv.get(key, "").strip()
            return np.array(text.split(), dtype=dtype) if text else np.empty(0, dtype=dtype)

        trees.append(
            _Tree(
                num_leaves=num_leaves,
                split_feature=arr("split_feature", np.int64),
                threshold=arr("threshold", np.float64),
                decision_type=arr("decision_type", np.int64),
                left_child=arr("left_child", np.int64),
                right_child=arr("right_child", np.int64),
                leaf_value=arr("leaf_value", np.float64),
                leaf_count=arr("leaf_count", np.float64),
                internal_count=arr("internal_count", np.float64),
                cat_boundaries=arr("cat_boundaries", np.int64),
                cat_threshold=arr("cat_threshold", np.uint32),
            )
        )
    return n_features, trees


def _leaf_paths(tree: _Tree) -> list[list[tuple[int, bool]]]:
    """For each leaf, its root-to-leaf path as (node, goes_left) pairs."""
    paths: list[list[tuple[int, bool]]] = [[] for _ in range(tree.num_leaves)]
    stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        for child, left in ((int(tree.left_child[node]), True), (int(tree.right_child[node]), False)):
            step = [*path, (node, left)]
            if child < 0:
                paths[~child] = step
            else:
                stack.append((child, step))
    return paths


def pack_model(
    model_text: str,
    *,
    max_path_features: int = MAX_FAST_PATH_FEATURES,
    table_budget_bytes: int = DEFAULT_TABLE_BUDGET_BYTES,
) -> PackedModel:
    """Flatten a LightGBM model (its ``model_to_string()`` text) and tabulate the v2 weights.

    Parameters
    ----------
    model_text
        ``booster.model_to_string()`` of a model with one tree per iteration.
    max_path_features
        Trees with a leaf whose path has more distinct features go to the fallback.
    table_budget_bytes
        Trees are admitted to the fast path, smallest tables first, while the
        tables fit in this budget; the rest go to the fallback.

    Returns
    -------
    PackedModel
        Arrays for :func:`tree_shap`.
    """
    n_features, trees = _parse_trees(model_text)

    # First pass: paths, distinct features and cover ratios per leaf; decide fast vs fallback.
    per_tree: list[list[tuple[list[tuple[int, bool]], list[int], list[float], list[int]]]] = []
    table_size: list[int] = []
    eligible: list[bool] = []
    for tree in trees:
        leaves: list[tuple[list[tuple[int, bool]], list[int], list[float], list[int]]] = []
        ok = True
        if tree.num_leaves > 1:
            if np.any(tree.internal_count <= 0):
                ok = False  # an empty node has no cover ratio; LightGBM decides what it means
            for path in _leaf_paths(tree):
                feats: list[int] = []
                ratios: list[float] = []
                slots: list[int] = []
                for node, left in path:
                    child = int(tree.left_child[node] if left else tree.right_child[node])
                    child_count = tree.internal_count[child] if child >= 0 else tree.leaf_count[~child]
                    ratio = float(child_count / tree.internal_count[node]) if ok else 0.0
                    feature = int(tree.split_feature[node])
                    if feature in feats:
                        slot = feats.index(feature)
                        ratios[slot] *= ratio
                    else:
                        slot = len(feats)
                        feats.append(feature)
                        ratios.append(ratio)
                    slots.append(slot)
                leaves.append((path, feats, ratios, slots))
            if max(len(leaf[1]) for leaf in leaves) > max_path_features:
                ok = False
        per_tree.append(leaves)
        eligible.append(ok)
        table_size.append(sum(1 << len(leaf[1]) for leaf in leaves) if ok else 0)

    fast = np.zeros(len(trees), dtype=bool)
    budget = table_budget_bytes // 8
    for t in sorted(range(len(trees)), key=lambda i: table_size[i]):
        if eligible[t] and table_size[t] <= budget:
            fast[t] = True
            budget -= table_size[t]

    # Second pass: flatten. Fallback trees keep no nodes or leaves here.
    tree_node_start = [0]
    tree_leaf_start = [0]
    node_feature: list[int] = []
    node_threshold: list[float] = []
    node_decision: list[int] = []
    node_cat_start: list[int] = []
    node_cat_len: list[int] = []
    cat_bits: list[np.ndarray] = []
    cat_offset = 0
    leaf_path_start = [0]
    path_node: list[int] = []
    path_left: list[bool] = []
    path_slot: list[int] = []
    leaf_slot_start = [0]
    slot_feature: list[int] = []
    slot_r: list[float] = []
    leaf_value: list[float] = []
    leaf_table_start = [0]
    base_value = 0.0
    max_nodes = 1
    for t, tree in enumerate(trees):
        if tree.num_leaves == 1:
            base_value += float(tree.leaf_value[0])
        if not fast[t] or tree.num_leaves == 1:
            tree_node_start.append(tree_node_start[-1])
            tree_leaf_start.append(tree_leaf_start[-1])
            continue
        n_nodes = tree.num_leaves - 1
        max_nodes = max(max_nodes, n_nodes)
        for node in range(n_nodes):
            decision = int(tree.decision_type[node])
            node_feature.append(int(tree.split_feature[node]))
            node_decision.append(decision)
            node_threshold.append(float(tree.threshold[node]))
            if decision & 1:
                cat_idx = int(tree.threshold[node])
                lo, hi = int(tree.cat_boundaries[cat_idx]), int(tree.cat_boundaries[cat_idx + 1])
                node_cat_start.append(cat_offset + lo)
                node_cat_len.append(hi - lo)
            else:
                node_cat_start.append(0)
                node_cat_len.append(0)
        if tree.cat_threshold.size:
            cat_bits.append(tree.cat_threshold)
            cat_offset += tree.cat_threshold.size
        for leaf, (path, feats, ratios, slots) in enumerate(per_tree[t]):
            value = float(tree.leaf_value[leaf])
            base_value += value * math.prod(ratios)
            path_node.extend(node for node, _ in path)
            path_left.extend(left for _, left in path)
            path_slot.extend(slots)
            slot_feature.extend(feats)
            slot_r.extend(ratios)
            leaf_value.append(value)
            leaf_path_start.append(len(path_node))
            leaf_slot_start.append(len(slot_feature))
            leaf_table_start.append(leaf_table_start[-1] + (1 << len(feats)))
        tree_node_start.append(len(node_feature))
        tree_leaf_start.append(len(leaf_value))

    packed_leaf_slot_start = np.array(leaf_slot_start, dtype=np.int64)
    packed_slot_r = np.array(slot_r, dtype=np.float64)
    packed_leaf_value = np.array(leaf_value, dtype=np.float64)
    packed_table_start = np.array(leaf_table_start, dtype=np.int64)
    tables = np.empty(int(packed_table_start[-1]), dtype=np.float64)
    if packed_leaf_value.size:
        _fill_tables(packed_leaf_slot_start, packed_slot_r, packed_leaf_value, packed_table_start, tables)

    fast_trees = np.flatnonzero(fast & np.array([tree.num_leaves > 1 for tree in trees], dtype=bool))
    fallback_trees = np.flatnonzero(~fast & np.array([tree.num_leaves > 1 for tree in trees], dtype=bool))
    if fallback_trees.size:
        logger.info(
            "TreeSHAP: %d of %d trees exceed the fast path's limits (more than %d distinct features "
            "on a path, empty nodes, or past the %d-byte table budget); LightGBM explains those",
            fallback_trees.size,
            len(trees),
            max_path_features,
            table_budget_bytes,
        )
    return PackedModel(
        n_features=n_features,
        n_trees=len(trees),
        fast_trees=fast_trees.astype(np.int64),
        fallback_trees=fallback_trees.astype(np.int64),
        base_value_fast=base_value,
        tree_node_start=np.array(tree_node_start, dtype=np.int64),
        node_feature=np.array(node_feature, dtype=np.int64),
        node_threshold=np.array(node_threshold, dtype=np.float64),
        node_decision=np.array(node_decision, dtype=np.int64),
        node_cat_start=np.array(node_cat_start, dtype=np.int64),
        node_cat_len=np.array(node_cat_len, dtype=np.int64),
        cat_bits=np.concatenate(cat_bits) if cat_bits else np.zeros(1, dtype=np.uint32),
        tree_leaf_start=np.array(tree_leaf_start, dtype=np.int64),
        leaf_path_start=np.array(leaf_path_start, dtype=np.int64),
        path_node=np.array(path_node, dtype=np.int64),
        path_left=np.array(path_left, dtype=np.bool_),
        path_slot=np.array(path_slot, dtype=np.int64),
        leaf_slot_start=packed_leaf_slot_start,
        slot_feature=np.array(slot_feature, dtype=np.int64),
        slot_r=packed_slot_r,
        leaf_value=packed_leaf_value,
        leaf_table_start=packed_table_start,
        tables=tables,
        max_nodes=max_nodes,
    )


@njit(cache=True, parallel=True)
def _fill_tables(
    leaf_slot_start: np.ndarray,
    slot_r: np.ndarray,
    leaf_value: np.ndarray,
    leaf_table_start: np.ndarray,
    tables: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """tables[leaf][U] = v * H(U) for every subset U of the leaf's path features."""
    for leaf in prange(leaf_value.shape[0]):
        s0 = leaf_slot_start[leaf]
        n = leaf_slot_start[leaf + 1] - s0
        size = 1 << n
        # w(k, n) = k! (n-k-1)! / n!, by the recurrence w(k) = w(k-1) * k / (n-k)
        w = np.empty(n)
        w[0] = 1.0 / n
        for k in range(1, n):
            w[k] = w[k - 1] * k / (n - k)
        # e[U, m]: elementary symmetric polynomial of degree m of {r_j : j in U}
        e = np.zeros((size, n + 1))
        e[0, 0] = 1.0
        for u in range(1, size):
            j = 0
            while not (u >> j) & 1:
                j += 1
            prev = u ^ (1 << j)
            r = slot_r[s0 + j]
            e[u, 0] = 1.0
            for m in range(1, n + 1):
                e[u, m] = e[prev, m] + r * e[prev, m - 1]
        base = leaf_table_start[leaf]
        v = leaf_value[leaf]
        for u in range(size):
            c = 0
            x = u
            while x:
                c += x & 1
                x >>= 1
            h = 0.0
            # |S| = k < n: U never holds all n features when it is looked up
            for k in range(min(c, n - 1) + 1):
                h += w[k] * e[u, c - k]
            tables[base + u] = v * h


@njit(cache=True, inline="always")
def _goes_left(
    fval: float, decision: int, threshold: float, cat_start: int, cat_len: int, cat_bits: np.ndarray
) -> bool:  # pragma: no cover - compiled
    """LightGBM's Tree::NumericalDecision / Tree::CategoricalDecision, as a left/right flag."""
    if decision & 1:
        if math.isnan(fval) or fval >= _INT_MAX + 1.0 or fval <= -1.0:
            return False
        category = int(fval)  # static_cast<int>: truncation toward zero
        word = category >> 5
        if word >= cat_len:
            return False
        return bool((cat_bits[cat_start + word] >> (category & 31)) & 1)
    missing = (decision >> 2) & 3
    if math.isnan(fval) and missing != 2:
        fval = 0.0
    if (missing == 1 and -_ZERO_THRESHOLD <= fval <= _ZERO_THRESHOLD) or (missing == 2 and math.isnan(fval)):
        return (decision & 2) != 0
    return fval <= threshold


@njit(cache=True, parallel=True)
def _shap_kernel(
    X: np.ndarray,
    fast_trees: np.ndarray,
    tree_node_start: np.ndarray,
    node_feature: np.ndarray,
    node_threshold: np.ndarray,
    node_decision: np.ndarray,
    node_cat_start: np.ndarray,
    node_cat_len: np.ndarray,
    cat_bits: np.ndarray,
    tree_leaf_start: np.ndarray,
    leaf_path_start: np.ndarray,
    path_node: np.ndarray,
    path_left: np.ndarray,
    path_slot: np.ndarray,
    leaf_slot_start: np.ndarray,
    slot_feature: np.ndarray,
    slot_r: np.ndarray,
    leaf_table_start: np.ndarray,
    tables: np.ndarray,
    max_nodes: int,
    block: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add every fast tree's SHAP values of every row of X to out (rows x features)."""
    n_rows = X.shape[0]
    n_blocks = (n_rows + block - 1) // block
    for b in prange(n_blocks):
        lo = b * block
        hi = min(n_rows, lo + block)
        left = np.empty(max_nodes, dtype=np.bool_)
        for ti in range(fast_trees.shape[0]):
            t = fast_trees[ti]
            n0 = tree_node_start[t]
            n_nodes = tree_node_start[t + 1] - n0
            for row in range(lo, hi):
                for k in range(n_nodes):
                    node = n0 + k
                    left[k] = _goes_left(
                        X[row, node_feature[node]],
                        node_decision[node],
                        node_threshold[node],
                        node_cat_start[node],
                        node_cat_len[node],
                        cat_bits,
                    )
                for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                    # bit s of `off` set: x leaves the path at a split on slot s's feature.
                    # Branch-free on purpose: which way x goes is data, and mispredicts cost more.
                    off = 0
                    for p in range(leaf_path_start[leaf], leaf_path_start[leaf + 1]):
                        off |= np.int64(left[path_node[p]] != path_left[p]) << path_slot[p]
                    s0 = leaf_slot_start[leaf]
                    n_slots = leaf_slot_start[leaf + 1] - s0
                    on = ((1 << n_slots) - 1) & ~off
                    r_off = 1.0
                    for s in range(n_slots):
                        r_off *= 1.0 + ((off >> s) & 1) * (slot_r[s0 + s] - 1.0)
                    tb = leaf_table_start[leaf]
                    for s in range(n_slots):
                        # on slot: +(1 - r) H(on minus s); off slot: -H(on), where on & ~bit == on
                        bit = (off >> s) & 1
                        coef = (1.0 - slot_r[s0 + s]) - bit * (2.0 - slot_r[s0 + s])
                        out[row, slot_feature[s0 + s]] += r_off * coef * tables[tb + (on & ~(1 << s))]


def tree_shap(packed: PackedModel, X: np.ndarray, *, block: int = ROW_BLOCK) -> np.ndarray:
    """SHAP values of the fast trees of ``packed`` for the rows of ``X``.

    Parameters
    ----------
    packed
        From :func:`pack_model`.
    X
        float64 matrix (rows x model features), categorical features as their codes.
    block
        Rows processed together per tree.

    Returns
    -------
    numpy.ndarray
        rows x features, in the model's raw units; the fallback trees are not included.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    out = np.zeros((X.shape[0], packed.n_features), dtype=np.float64)
    if packed.fast_trees.size and X.shape[0]:
        _shap_kernel(
            X,
            packed.fast_trees,
            packed.tree_node_start,
            packed.node_feature,
            packed.node_threshold,
            packed.node_decision,
            packed.node_cat_start,
            packed.node_cat_len,
            packed.cat_bits,
            packed.tree_leaf_start,
            packed.leaf_path_start,
            packed.path_node,
            packed.path_left,
            packed.path_slot,
            packed.leaf_slot_start,
            packed.slot_feature,
            packed.slot_r,
            packed.leaf_table_start,
            packed.tables,
            packed.max_nodes,
            block,
            out,
        )
    return out
