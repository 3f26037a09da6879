"""Selective search object proposals (Uijlings et al. 2013), on Felzenszwalb segments.

SPP-net (Sec. 4) uses the "fast" mode of selective search, about 2,000 windows per image. The
algorithm:

1. Over-segment the image with :func:`skimage.segmentation.felzenszwalb` (graph-based, scale
   ``k``) in a colour space.
2. Describe every region by its size, bounding box, a colour histogram (25 bins per channel) and
   a texture histogram (8 oriented derivatives x 10 bins per channel), each L1-normalised.
3. Greedily merge the most similar pair of *neighbouring* regions until one region is left;
   similarity ``s = s_colour + s_texture + s_size + s_fill`` with histogram intersections
   ``sum(min(h_i, h_j))``, ``s_size = 1 - (|r_i| + |r_j|) / |image|`` (small regions merge first)
   and ``s_fill = 1 - (|bbox(r_i u r_j)| - |r_i| - |r_j|) / |image|`` (regions that fill each
   other's box merge first). The merged region's histograms are size-weighted averages.
4. Every region ever formed gives a box. Diversify over colour spaces, ``k`` values and
   similarity mixes, rank boxes by their position in the hierarchy times a random factor,
   deduplicate, keep the first ``max_boxes``.

Modes (:data:`MODES`): ``"fast"`` is the paper's setting (SPP-net Sec. 4, after Uijlings et al.
Sec. 5.2): every combination of the colour spaces {HSV, Lab}, ``k`` in {50, 100} and the
similarity sets {colour+texture+size+fill, texture+size+fill} -- 8 groupings per image.
``"single"`` is one grouping (HSV, k = 100, all four similarities): about 8x faster, for tests
and quick runs.

Histograms are built with one ``np.bincount`` per image; only the merging loop is Python.

Examples
--------
>>> import numpy as np
>>> img = np.zeros((32, 48, 3)); img[8:20, 10:30] = 1.0
>>> boxes = selective_search(img, seed=0)
>>> bool(((boxes == [10, 8, 30, 20]).all(axis=1)).any())   # the square is one of the boxes
True
"""

from __future__ import annotations

import heapq

import numpy as np

from ..validate import check_choice, check_int

COLOUR_SPACES = ("rgb", "hsv", "lab")
COLOUR_BINS = 25
TEXTURE_BINS = 10
N_ORIENTATIONS = 8


def _to_space(image: np.ndarray, space: str) -> np.ndarray:
    """The image in a colour space, each channel rescaled to [0, 1]."""
    from skimage import color

    if space == "rgb":
        return image
    if space == "hsv":
        return color.rgb2hsv(image)
    lab = color.rgb2lab(image)
    return (lab - [0.0, -128.0, -128.0]) / [100.0, 255.0, 255.0]


def _region_features(image, labels, n):
    """Per-region size, box, colour and texture histograms.

    Returns ``size (n,)``, ``box (n, 4)`` as ``[x0, y0, x1, y1]`` (x1, y1 exclusive),
    ``colour (n, 3*25)`` and ``texture (n, 3*8*10)``, both L1-normalised per region.
    """
    H, W, C = image.shape
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    rows, cols = np.divmod(np.arange(H * W), W)
    box = np.empty((n, 4))
    box[:, 0] = np.full(n, W)
    box[:, 1] = np.full(n, H)
    box[:, 2:] = 0
    np.minimum.at(box[:, 0], flat, cols)
    np.minimum.at(box[:, 1], flat, rows)
    np.maximum.at(box[:, 2], flat, cols + 1)
    np.maximum.at(box[:, 3], flat, rows + 1)

    def histogram(values, bins):                       # values (H*W, D) in [0, 1] -> (n, D*bins)
        D = values.shape[1]
        idx = np.minimum((values * bins).astype(np.int64), bins - 1) + bins * np.arange(D)
        key = flat[:, None] * (D * bins) + idx          # (H*W, D)
        h = np.bincount(key.ravel(), minlength=n * D * bins).reshape(n, D * bins)
        return h / np.maximum(h.sum(axis=1, keepdims=True), 1)

    colour = histogram(np.clip(image.reshape(-1, C), 0, 1), COLOUR_BINS)
    gy, gx = np.gradient(image, axis=(0, 1))            # (H, W, C) each
    theta = np.arange(N_ORIENTATIONS) * (2 * np.pi / N_ORIENTATIONS)
    resp = np.clip(gx[..., None] * np.cos(theta) + gy[..., None] * np.sin(theta), 0, None)
    resp = resp.reshape(H * W, C * N_ORIENTATIONS)      # oriented derivative responses
    resp = resp / max(resp.max(), 1e-12)
    texture = histogram(resp, TEXTURE_BINS)
    return size, box, colour, texture


def _neighbour_pairs(labels):
    """Unique pairs (i < j) of labels that touch horizontally, vertically or diagonally."""
    pairs = [np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
             np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
             np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], 1),
             np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], 1)]
    p = np.concatenate(pairs)
    p = p[p[:, 0] != p[:, 1]]
    p = np.sort(p, axis=1)
    return np.unique(p, axis=0)


def _group(size, box, colour, texture, pairs, image_area, use):
    """Hierarchical grouping; returns the boxes ``(n + merges, 4)`` of every region formed, in
    order of formation (the initial segments first, the last merge last)."""
    n = len(size)
    cap = 2 * n
    size = np.concatenate([size, np.zeros(n)])
    box = np.concatenate([box, np.zeros((n, 4))])
    colour = np.concatenate([colour, np.zeros((n, colour.shape[1]))])
    texture = np.concatenate([texture, np.zeros((n, texture.shape[1]))])
    neighbours = [set() for _ in range(cap)]
    for i, j in pairs:
        neighbours[i].add(int(j))
        neighbours[j].add(int(i))

    def similarity(i, j):
        s = 0.0
        if "colour" in use:
            s += np.minimum(colour[i], colour[j]).sum()
        if "texture" in use:
            s += np.minimum(texture[i], texture[j]).sum()
        if "size" in use:
            s += 1 - (size[i] + size[j]) / image_area
        if "fill" in use:
            bw = max(box[i, 2], box[j, 2]) - min(box[i, 0], box[j, 0])
            bh = max(box[i, 3], box[j, 3]) - min(box[i, 1], box[j, 1])
            s += 1 - (bw * bh - size[i] - size[j]) / image_area
        return s

    heap = [(-similarity(int(i), int(j)), int(i), int(j)) for i, j in pairs]
    heapq.heapify(heap)
    alive = np.zeros(cap, dtype=bool)
    alive[:n] = True
    new = n
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue                                     # a stale pair: one side was merged
        t = new
        new += 1
        size[t] = size[i] + size[j]
        wi, wj = size[i] / size[t], size[j] / size[t]
        colour[t] = wi * colour[i] + wj * colour[j]
        texture[t] = wi * texture[i] + wj * texture[j]
        box[t, :2] = np.minimum(box[i, :2], box[j, :2])
        box[t, 2:] = np.maximum(box[i, 2:], box[j, 2:])
        alive[i] = alive[j] = False
        alive[t] = True
        neighbours[t] = (neighbours[i] | neighbours[j]) - {i, j}
        for k in neighbours[t]:
            neighbours[k] -= {i, j}
            neighbours[k].add(t)
            heapq.heappush(heap, (-similarity(t, k), min(t, k), max(t, k)))
    return box[:new]


COLOUR_TEXTURE_SIZE_FILL = ("colour", "texture", "size", "fill")
TEXTURE_SIZE_FILL = ("texture", "size", "fill")
SIMILARITIES = ("colour", "texture", "size", "fill")

#: Selective-search modes: colour spaces x Felzenszwalb ``k`` x similarity sets (all combined).
MODES = {
    "fast": dict(colour_spaces=("hsv", "lab"), ks=(50, 100),
                 strategies=(COLOUR_TEXTURE_SIZE_FILL, TEXTURE_SIZE_FILL)),
    "single": dict(colour_spaces=("hsv",), ks=(100,), strategies=(COLOUR_TEXTURE_SIZE_FILL,)),
}


def selective_search(image, mode: str = "fast", *, colour_spaces=None, ks=None, strategies=None,
                     sigma: float = 0.8, max_boxes: int = 2000, min_side: int = 4,
                     seed=0) -> np.ndarray:
    """Selective search proposals for one image.

    Parameters
    ----------
    image : ndarray of shape (H, W), (H, W, 3) or (H, W, 4)
        uint8, uint16 or float in [0, 1] (converted by :func:`tinyspp.detect.data.as_image`).
    mode : {"fast", "single"}
        The lists of colour spaces, ``k`` values and similarity sets (:data:`MODES`); every
        combination is one grouping.
    colour_spaces : sequence of {"rgb", "hsv", "lab"}, optional
        Overrides the mode's colour spaces.
    ks : sequence of float, optional
        Overrides the mode's Felzenszwalb ``scale`` values (larger -> fewer, bigger initial
        segments); each is also used as its ``min_size``.
    strategies : sequence of sequences of {"colour", "texture", "size", "fill"}, optional
        Overrides the mode's similarity sets.
    sigma : float
        Gaussian pre-smoothing of the segmentation.
    max_boxes : int
        Keep at most this many boxes.
    min_side : int
        Drop boxes narrower or shorter than this many pixels.
    seed : int or np.random.Generator
        Randomness of the ranking (hierarchy position x uniform(0, 1), as in the original).

    Returns
    -------
    ndarray of shape (K, 4), float64
        Unique boxes ``[x0, y0, x1, y1]`` (x1, y1 exclusive), best-ranked first, ``K <= max_boxes``.
    """
    from skimage.segmentation import felzenszwalb

    from .data import as_image

    func = "selective_search"
    image = as_image(image, "image", func)
    check_choice(mode, "mode", func, tuple(MODES))
    spaces = MODES[mode]["colour_spaces"] if colour_spaces is None else tuple(colour_spaces)
    ks = MODES[mode]["ks"] if ks is None else tuple(ks)
    strategies = MODES[mode]["strategies"] if strategies is None else tuple(strategies)
    check_int(max_boxes, "max_boxes", func)
    for space in spaces:
        check_choice(space, "colour_spaces", func, COLOUR_SPACES)
    for use in strategies:
        if not use or any(u not in SIMILARITIES for u in use):
            raise ValueError(f"{func}: each strategy must be a non-empty subset of "
                             f"{SIMILARITIES}, got {use!r}")
    if not (spaces and ks and strategies):
        raise ValueError(f"{func}: colour_spaces, ks and strategies must not be empty")
    rng = np.random.default_rng(seed)
    image = image.astype(np.float64)
    H, W = image.shape[:2]
    all_boxes, all_ranks = [], []
    for space in spaces:
        img = _to_space(image, space)
        for k in ks:
            labels = felzenszwalb(img, scale=k, sigma=sigma, min_size=int(k), channel_axis=-1)
            n = int(labels.max()) + 1
            feats = _region_features(img, labels, n)
            pairs = _neighbour_pairs(labels)
            for use in strategies:
                boxes = _group(*feats, pairs, float(H * W), use)
                # rank as the original: position in the hierarchy (the last merge, the whole
                # connected image, is 1) times a uniform random factor; small ranks come first
                position = (len(boxes) - np.arange(len(boxes))).astype(np.float64)
                all_boxes.append(boxes)
                all_ranks.append(position * rng.uniform(0, 1, len(boxes)))
    boxes = np.concatenate(all_boxes)
    ranks = np.concatenate(all_ranks)
    wide = ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)
    boxes, ranks = boxes[wide], ranks[wide]
    boxes = boxes[np.argsort(ranks, kind="stable")]
    _, first = np.unique(boxes, axis=0, return_index=True)     # deduplicate, keep the best rank
    return boxes[np.sort(first)][:max_boxes]


def proposal_recall(proposals, ground_truth, threshold: float = 0.5) -> float:
    """Fraction of ground-truth boxes covered by some proposal with IoU >= ``threshold``.

    Parameters
    ----------
    proposals : list of (K_i, 4) arrays, one per image
    ground_truth : list of (G_i, 4) arrays, one per image
    """
    from .geometry import iou

    hit = total = 0
    for p, g in zip(proposals, ground_truth):
        if len(g) == 0:
            continue
        total += len(g)
        if len(p):
            hit += int((iou(g, p).max(axis=1) >= threshold).sum())
    return hit / total if total else float("nan")
