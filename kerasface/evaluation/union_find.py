"""Disjoint-set forest (Union-Find) over the integers ``0 .. n-1``."""

import operator

import numpy as np


class UnionFind:
    """Disjoint sets over ``0 .. num_elements - 1`` with path compression and union by size.

    Every element starts in its own set. ``find`` and ``union`` run in near-constant amortised
    time (inverse Ackermann), so linking all ``k`` edges of a graph costs ``O(k)``.

    Args:
        num_elements: number of elements, >= 0.

    Attributes:
        num_components: the current number of disjoint sets.
    """

    def __init__(self, num_elements):
        try:
            num_elements = operator.index(num_elements)
        except TypeError:
            raise TypeError(
                f"`num_elements` must be an int, got {type(num_elements).__name__}"
            ) from None
        if num_elements < 0:
            raise ValueError(f"`num_elements` must be >= 0, got {num_elements}")
        self.num_elements = num_elements
        self._parent = list(range(num_elements))
        self._size = [1] * num_elements
        self.num_components = num_elements

    def __len__(self):
        return self.num_elements

    def find(self, element):
        """The representative (root) of ``element``'s set; compresses the path it walked."""
        element = self._check(element)
        parent = self._parent
        root = element
        while parent[root] != root:
            root = parent[root]
        # Second pass points every node on the path straight at the root (iterative, so deep
        # chains cannot hit Python's recursion limit).
        while parent[element] != root:
            parent[element], element = root, parent[element]
        return root

    def union(self, a, b):
        """Merge the sets of ``a`` and ``b``; returns True if they were separate.

        The smaller set is attached under the larger one's root; on equal sizes ``b``'s root
        goes under ``a``'s.
        """
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return False
        if self._size[root_a] < self._size[root_b]:
            root_a, root_b = root_b, root_a
        self._parent[root_b] = root_a
        self._size[root_a] += self._size[root_b]
        self.num_components -= 1
        return True

    def union_pairs(self, pairs):
        """Merge along every ``(a, b)`` row of an ``(k, 2)`` array-like; returns how many merges.

        Edges are taken in blocks; before each block after the first, every path is flattened
        with vectorised pointer jumping and the edges already inside one set are dropped in
        NumPy, so a dense graph (e.g. every frame of a long video linked to every other) costs
        about one Python-level union per element rather than one per edge.
        """
        pairs = np.asarray(pairs)
        if pairs.size == 0:
            return 0
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
            raise ValueError(
                f"`pairs` must be integers of shape (k, 2), got {pairs.dtype} {pairs.shape}"
            )
        low, high = int(pairs.min()), int(pairs.max())
        if low < 0 or high >= self.num_elements:
            bad = low if low < 0 else high
            raise IndexError(
                f"element {bad} is out of range for a UnionFind of {self.num_elements} elements"
            )
        block = max(1024, self.num_elements)
        merges = 0
        for start in range(0, len(pairs), block):
            edges = pairs[start:start + block]
            if start:
                roots = self._flatten()
                edges = edges[roots[edges[:, 0]] != roots[edges[:, 1]]]
            for a, b in edges.tolist():
                merges += self.union(a, b)
        return merges

    def _flatten(self):
        """Point every element straight at its root; returns the roots as an int64 array."""
        parent = np.asarray(self._parent, np.int64)
        while True:
            grandparent = parent[parent]
            if np.array_equal(grandparent, parent):
                break
            parent = grandparent
        self._parent = parent.tolist()
        return parent

    def connected(self, a, b):
        """Whether ``a`` and ``b`` are in the same set."""
        return self.find(a) == self.find(b)

    def size(self, element):
        """Number of elements in ``element``'s set."""
        return self._size[self.find(element)]

    def component_labels(self):
        """int64 ``(num_elements,)`` set label of each element.

        Labels are ``0 .. num_components - 1``, numbered in order of each set's smallest
        element, so the labelling does not depend on the order the unions were made in.
        """
        roots = [self.find(element) for element in range(self.num_elements)]
        label_of_root = {}
        labels = np.empty(self.num_elements, np.int64)
        for element, root in enumerate(roots):
            labels[element] = label_of_root.setdefault(root, len(label_of_root))
        return labels

    def groups(self):
        """The sets as sorted int64 arrays, ordered by their smallest element."""
        labels = self.component_labels()
        order = np.argsort(labels, kind="stable")
        bounds = np.cumsum(np.bincount(labels, minlength=self.num_components))[:-1]
        return np.split(order.astype(np.int64), bounds) if self.num_elements else []

    def _check(self, element):
        try:
            index = operator.index(element)
        except TypeError:
            raise TypeError(f"elements must be ints, got {type(element).__name__}") from None
        if not 0 <= index < self.num_elements:
            raise IndexError(
                f"element {index} is out of range for a UnionFind of {self.num_elements} elements"
            )
        return index

    def __repr__(self):
        return f"UnionFind(num_elements={self.num_elements}, num_components={self.num_components})"
