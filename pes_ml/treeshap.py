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
For one leaf with value ``v``, let ``P`` be the distinct features split on along its
root-to-leaf path (``n = |P|``), ``r_j`` the product of the cover ratios
``count(child) / count(node)`` of the splits on feature ``j`` along that path, and
``O(x) ⊆ P`` the features whose every split on the path sends ``x`` the path's way.
Path-dependent TreeSHAP of that leaf is::

    phi_i = v (o_i - r_i) sum_{S ⊆ O - {i}} w(|S|, n) prod_{j in P - S - {i}} r_j,
    w(k, n) = k! (n - k - 1)! / n!

With ``F(U) = sum_{S ⊆ U} w(|S|, n) prod_{j in P - S} r_j`` this is::

    i in O:      phi_i = v (1 - r_i) / r_i * F(O - {i})
    i not in O:  phi_i = -v F(O)

``v F(U)`` depends only on the leaf and the subset ``U``, so it is tabulated once per
model for every subset (``2**n`` numbers per leaf, from elementary symmetric
polynomials of the ``r_j``). Explaining a row then costs, per tree, one pass over the
internal nodes — each decides its split once and hands its children the bitmask of
the tree's features on which ``x`` has left the path so far — and, per leaf, ``n``
bit tests to read ``O`` and ``n`` table lookups, one per path feature: ``O(L D)``
instead of classic TreeSHAP's ``O(L D^2)`` extend/unwind recursion. Rows are processed
in blocks, tree by tree, so that a tree's tables stay in cache while a block streams
through, and blocks run in parallel on all cores (``numba.prange``). The accumulation
is branch-free on purpose: which way a row goes is data, and mispredicted branches
cost more than the arithmetic.

Trees the fast path does not take — a path with more than
:data:`MAX_FAST_PATH_FEATURES` distinct features (``2**n`` grows fast), more than 63
distinct features in one tree (the bitmask), a node without training rows (no cover
ratio), or past the table memory budget — are explained by LightGBM's own C++
TreeSHAP (``pred_contrib`` for just those iterations), which computes the same values.

The split decisions mirror LightGBM's ``Tree::NumericalDecision`` and
``Tree::CategoricalDecision`` exactly (``<=`` thresholds, missing type None / Zero /
NaN with the default direction, categorical bitsets, NaN and negative categories go
right).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
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

    Nodes are stored per tree in an order where a parent precedes its children
    (``tree_node_start`` gives each tree's offset); children are local node indices,
    or ``~leaf`` for a leaf (leaf numbers local to the tree). Leaves, slots (the
    distinct features of a leaf's path) and tables are global.
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
    node_bit: np.ndarray  # index of the node's feature among its tree's distinct features
    node_left: np.ndarray
    node_right: np.ndarray
    cat_bits: np.ndarray
    tree_leaf_start: np.ndarray
    leaf_slot_start: np.ndarray
    slot_feature: np.ndarray
    slot_bit: np.ndarray
    slot_coef: np.ndarray  # (1 - r) / r
    leaf_table_start: np.ndarray
    tables: np.ndarray  # v F(U) per leaf and subset U of its slots
    max_nodes: int
    max_leaves: int

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


def _preorder(tree: _Tree) -> list[int]:
    """Internal nodes with every parent before its children."""
    order: list[int] = []
    stack = [0]
    while stack:
        node = stack.pop()
        order.append(node)
        for child in (int(tree.right_child[node]), int(tree.left_child[node])):
            if child >= 0:
                stack.append(child)
    return order


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


@dataclass
class _Leaf:
    value: float
    features: list[int]  # distinct features on the path, in path order (the leaf's slots)
    ratios: list[float]  # product of the cover ratios of the splits on each feature


def _leaves(tree: _Tree) -> list[_Leaf]:
    leaves = []
    for leaf, path in enumerate(_leaf_paths(tree)):
        features: list[int] = []
        ratios: list[float] = []
        for node, left in path:
            child = int(tree.left_child[node] if left else tree.right_child[node])
            child_count = tree.internal_count[child] if child >= 0 else tree.leaf_count[~child]
            ratio = float(child_count / tree.internal_count[node])
            feature = int(tree.split_feature[node])
            if feature in features:
                ratios[features.index(feature)] *= ratio
            else:
                features.append(feature)
                ratios.append(ratio)
        leaves.append(_Leaf(float(tree.leaf_value[leaf]), features, ratios))
    return leaves


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

    Raises
    ------
    ValueError
        If the model has linear trees (no TreeSHAP explanation).
    """
    n_features, trees = _parse_trees(model_text)

    # Which trees take the fast path.
    leaves_of: list[list[_Leaf]] = []
    table_size: list[int] = []
    for tree in trees:
        ok = (
            tree.num_leaves > 1
            and bool(np.all(tree.internal_count > 0))
            and bool(np.all(tree.leaf_count > 0))
        )
        ok = ok and len(set(tree.split_feature.tolist())) <= 63
        leaves = _leaves(tree) if ok else []
        ok = ok and max(len(leaf.features) for leaf in leaves) <= max_path_features
        leaves_of.append(leaves)
        table_size.append(sum(1 << len(leaf.features) for leaf in leaves) if ok else -1)
    fast = np.zeros(len(trees), dtype=bool)
    budget = table_budget_bytes // 8
    for t in sorted(range(len(trees)), key=lambda i: table_size[i]):
        if 0 <= table_size[t] <= budget:
            fast[t] = True
            budget -= table_size[t]

    nodes: dict[str, list[float]] = {
        k: [] for k in ("feature", "threshold", "decision", "cat_start", "cat_len", "bit", "left", "right")
    }
    slots: dict[str, list[float]] = {k: [] for k in ("feature", "bit", "coef", "r")}
    tree_node_start, tree_leaf_start, leaf_slot_start, leaf_table_start = [0], [0], [0], [0]
    leaf_value: list[float] = []
    cat_bits: list[np.ndarray] = []
    cat_offset = 0
    base_value = 0.0
    max_nodes = max_leaves = 1
    for t, tree in enumerate(trees):
        if tree.num_leaves == 1:
            base_value += float(tree.leaf_value[0])
        if fast[t]:
            order = _preorder(tree)
            local = {node: i for i, node in enumerate(order)}
            bit_of = {f: i for i, f in enumerate(dict.fromkeys(int(tree.split_feature[n]) for n in order))}
            for node in order:
                decision = int(tree.decision_type[node])
                nodes["feature"].append(int(tree.split_feature[node]))
                nodes["threshold"].append(float(tree.threshold[node]))
                nodes["decision"].append(decision)
                nodes["bit"].append(bit_of[int(tree.split_feature[node])])
                for side, child in (("left", tree.left_child[node]), ("right", tree.right_child[node])):
                    nodes[side].append(local[int(child)] if child >= 0 else int(child))
                if decision & 1:  # categorical: threshold indexes the tree's bitsets
                    cat_idx = int(tree.threshold[node])
                    lo, hi = int(tree.cat_boundaries[cat_idx]), int(tree.cat_boundaries[cat_idx + 1])
                    nodes["cat_start"].append(cat_offset + lo)
                    nodes["cat_len"].append(hi - lo)
                else:
                    nodes["cat_start"].append(0)
                    nodes["cat_len"].append(0)
            if tree.cat_threshold.size:
                cat_bits.append(tree.cat_threshold)
                cat_offset += tree.cat_threshold.size
            for leaf in leaves_of[t]:
                base_value += leaf.value * math.prod(leaf.ratios)
                slots["feature"].extend(leaf.features)
                slots["bit"].extend(bit_of[f] for f in leaf.features)
                slots["coef"].extend((1.0 - r) / r for r in leaf.ratios)
                slots["r"].extend(leaf.ratios)
                leaf_value.append(leaf.value)
                leaf_slot_start.append(len(slots["feature"]))
                leaf_table_start.append(leaf_table_start[-1] + (1 << len(leaf.features)))
            max_nodes = max(max_nodes, len(order))
            max_leaves = max(max_leaves, tree.num_leaves)
        tree_node_start.append(len(nodes["feature"]))
        tree_leaf_start.append(len(leaf_value))

    packed_leaf_slot_start = np.array(leaf_slot_start, dtype=np.int64)
    packed_leaf_value = np.array(leaf_value, dtype=np.float64)
    packed_table_start = np.array(leaf_table_start, dtype=np.int64)
    tables = np.empty(int(packed_table_start[-1]), dtype=np.float64)
    if packed_leaf_value.size:
        _fill_tables(
            packed_leaf_slot_start,
            np.array(slots["r"], dtype=np.float64),
            packed_leaf_value,
            packed_table_start,
            tables,
        )

    multi_leaf = np.array([tree.num_leaves > 1 for tree in trees], dtype=bool)
    fallback_trees = np.flatnonzero(~fast & multi_leaf)
    if fallback_trees.size:
        logger.info(
            "TreeSHAP: %d of %d trees are past the fast path's limits (more than %d distinct "
            "features on a path, more than 63 in a tree, empty nodes, or past the %d-byte table "
            "budget); LightGBM's own TreeSHAP explains those",
            fallback_trees.size,
            len(trees),
            max_path_features,
            table_budget_bytes,
        )

    def ints(values: Sequence[float]) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    return PackedModel(
        n_features=n_features,
        n_trees=len(trees),
        fast_trees=np.flatnonzero(fast).astype(np.int64),
        fallback_trees=fallback_trees.astype(np.int64),
        base_value_fast=base_value,
        tree_node_start=ints(tree_node_start),
        node_feature=ints(nodes["feature"]),
        node_threshold=np.array(nodes["threshold"], dtype=np.float64),
        node_decision=ints(nodes["decision"]),
        node_cat_start=ints(nodes["cat_start"]),
        node_cat_len=ints(nodes["cat_len"]),
        node_bit=ints(nodes["bit"]),
        node_left=ints(nodes["left"]),
        node_right=ints(nodes["right"]),
        cat_bits=np.concatenate(cat_bits) if cat_bits else np.zeros(1, dtype=np.uint32),
        tree_leaf_start=ints(tree_leaf_start),
        leaf_slot_start=packed_leaf_slot_start,
        slot_feature=ints(slots["feature"]),
        slot_bit=ints(slots["bit"]),
        slot_coef=np.array(slots["coef"], dtype=np.float64),
        leaf_table_start=packed_table_start,
        tables=tables,
        max_nodes=max_nodes,
        max_leaves=max_leaves,
    )


@njit(cache=True, parallel=True)
def _fill_tables(
    leaf_slot_start: np.ndarray,
    slot_r: np.ndarray,
    leaf_value: np.ndarray,
    leaf_table_start: np.ndarray,
    tables: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """tables[leaf][U] = v F(U) = v H(U) prod_{j not in U} r_j for every subset U of the leaf's slots.

    ``H(U) = sum_{S ⊆ U} w(|S|, n) prod_{j in U - S} r_j = sum_k w(k, n) e_{|U|-k}(r_U)``
    with ``e_m`` the elementary symmetric polynomials, built subset by subset.
    """
    for leaf in prange(leaf_value.shape[0]):
        s0 = leaf_slot_start[leaf]
        n = leaf_slot_start[leaf + 1] - s0
        size = 1 << n
        full = size - 1
        # w(k, n) = k! (n-k-1)! / n!, by the recurrence w(k) = w(k-1) * k / (n-k)
        w = np.empty(n)
        w[0] = 1.0 / n
        for k in range(1, n):
            w[k] = w[k - 1] * k / (n - k)
        e = np.zeros((size, n + 1))  # e[U, m]: degree-m elementary symmetric polynomial of r_U
        prod = np.empty(size)  # prod[U] = prod_{j in U} r_j
        e[0, 0] = 1.0
        prod[0] = 1.0
        for u in range(1, size):
            j = 0
            while not (u >> j) & 1:
                j += 1
            prev = u ^ (1 << j)
            r = slot_r[s0 + j]
            prod[u] = prod[prev] * r
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
            tables[base + u] = v * h * prod[full ^ u]


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
    node_bit: np.ndarray,
    node_left: np.ndarray,
    node_right: np.ndarray,
    cat_bits: np.ndarray,
    tree_leaf_start: np.ndarray,
    leaf_slot_start: np.ndarray,
    slot_feature: np.ndarray,
    slot_bit: np.ndarray,
    slot_coef: np.ndarray,
    leaf_table_start: np.ndarray,
    tables: np.ndarray,
    max_nodes: int,
    max_leaves: int,
    block: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add every fast tree's SHAP values of every row of X to out (rows x features)."""
    n_rows = X.shape[0]
    n_blocks = (n_rows + block - 1) // block
    for b in prange(n_blocks):
        lo = b * block
        hi = min(n_rows, lo + block)
        # bit f set: x has left the path at a split on the tree's f-th feature
        node_off = np.empty(max_nodes, dtype=np.int64)
        leaf_off = np.empty(max_leaves, dtype=np.int64)
        for ti in range(fast_trees.shape[0]):
            t = fast_trees[ti]
            n0 = tree_node_start[t]
            n_nodes = tree_node_start[t + 1] - n0
            l0 = tree_leaf_start[t]
            n_leaves = tree_leaf_start[t + 1] - l0
            for row in range(lo, hi):
                node_off[0] = 0
                for k in range(n_nodes):
                    node = n0 + k
                    goes_left = _goes_left(
                        X[row, node_feature[node]],
                        node_decision[node],
                        node_threshold[node],
                        node_cat_start[node],
                        node_cat_len[node],
                        cat_bits,
                    )
                    bit = np.int64(1) << node_bit[node]
                    off_left = node_off[k] | (bit * np.int64(not goes_left))
                    off_right = node_off[k] | (bit * np.int64(goes_left))
                    child = node_left[node]
                    if child < 0:
                        leaf_off[~child] = off_left
                    else:
                        node_off[child] = off_left
                    child = node_right[node]
                    if child < 0:
                        leaf_off[~child] = off_right
                    else:
                        node_off[child] = off_right
                for j in range(n_leaves):
                    leaf = l0 + j
                    off = leaf_off[j]
                    s0 = leaf_slot_start[leaf]
                    n_slots = leaf_slot_start[leaf + 1] - s0
                    on = 0  # O(x) as a bitmask over the leaf's slots
                    for s in range(n_slots):
                        on |= (((off >> slot_bit[s0 + s]) & 1) ^ 1) << s
                    tb = leaf_table_start[leaf]
                    for s in range(n_slots):
                        # on slot: (1 - r) / r * vF(on - s); off slot: -vF(on), and there on - s == on
                        is_on = (on >> s) & 1
                        out[row, slot_feature[s0 + s]] += tables[tb + (on & ~(1 << s))] * (
                            is_on * (slot_coef[s0 + s] + 1.0) - 1.0
                        )


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
            packed.node_bit,
            packed.node_left,
            packed.node_right,
            packed.cat_bits,
            packed.tree_leaf_start,
            packed.leaf_slot_start,
            packed.slot_feature,
            packed.slot_bit,
            packed.slot_coef,
            packed.leaf_table_start,
            packed.tables,
            packed.max_nodes,
            packed.max_leaves,
            block,
            out,
        )
    return out
