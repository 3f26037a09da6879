"""A detector = proposals + a feature extractor + the shared SVM / box-regression head.

SPP-net (He et al. 2014, Sec. 4) per image::

    selective search (~2,000 windows)                          proposals.selective_search
      -> conv trunk ONCE per image and scale, region SPP       features.SPPFeatures   (R, C*M)
      -> [fc layers] -> one linear SVM per class                head.DetectionHead     (R, K)
      -> class-specific box regression (pool5) -> NMS 0.3       head.DetectionHead

R-CNN is the same with :class:`tinyspp.detect.rcnn.RCNNFeatures` (warp every window, run the
trunk on each) as the extractor: :class:`Detector` composes any extractor with the one head.

Training (:meth:`Detector.fit`) goes through per-image :class:`~tinyspp.detect.head.ImageRecord`
s (ground truth + proposals, their pool5 features and overlaps): :meth:`Detector.iter_records`
yields them one image at a time (images may be a lazy sequence such as
:class:`tinyspp.detect.voc.VOCDataset`), so a caller can store them (``tinyspp.scale``) and
train the head from the store with :meth:`Detector.fit_records`.

Images at the public entries (:meth:`Detector.detect`, :meth:`Detector.records`, the
extractors, :func:`~tinyspp.detect.proposals.selective_search`) may be ``(H, W)`` greyscale,
``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, uint8, uint16 or float in [0, 1]; they are converted once
by :func:`tinyspp.detect.data.as_image` to ``(H, W, 3)`` float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np

from .data import as_image
from .features import SPPFeatures
from .geometry import check_boxes
from .head import DetectionHead, ImageRecord, make_record


class Detector:
    """Proposals, an extractor and a :class:`~tinyspp.detect.head.DetectionHead`.

    Parameters
    ----------
    extractor : object with ``pool(image, boxes (R, 4)) -> (R, D)``
        :class:`~tinyspp.detect.features.SPPFeatures` or
        :class:`~tinyspp.detect.rcnn.RCNNFeatures`.
    head : DetectionHead
    proposal_options : dict, optional
        Keyword arguments of :func:`~tinyspp.detect.proposals.selective_search`.
    """

    def __init__(self, extractor, head: DetectionHead, *, proposal_options=None):
        if not callable(getattr(extractor, "pool", None)):
            raise TypeError(f"Detector: extractor must have a pool(image, boxes) method, got "
                            f"{type(extractor).__name__}")
        if not isinstance(head, DetectionHead):
            raise TypeError(f"Detector: head must be a DetectionHead, got {type(head).__name__}")
        self.extractor, self.head = extractor, head
        self.proposal_options = dict(proposal_options or {})

    @property
    def n_classes(self) -> int:
        return self.head.n_classes

    def propose(self, image) -> np.ndarray:
        """Selective-search windows ``(R, 4)`` of one image."""
        from .proposals import selective_search

        return selective_search(image, **self.proposal_options)

    # ------------------------------------------------------------------ training
    def iter_records(self, images, boxes, labels, proposals=None, difficult=None):
        """Yield the :class:`ImageRecord` of each training image, one image at a time.

        ``images``: a sequence (``len`` and indexing; may load lazily) of images; ``boxes``,
        ``labels`` (and ``difficult``, ``proposals``): one ``(G_i, 4)`` / ``(G_i,)`` /
        ``(G_i,)`` / ``(P_i, 4)`` array per image. Missing proposals are computed.
        """
        func = "Detector.records"
        n = len(images)
        for name, v in (("boxes", boxes), ("labels", labels), ("proposals", proposals),
                        ("difficult", difficult)):
            if v is not None and len(v) != n:
                raise ValueError(f"{func}: {name} must have one entry per image ({n}), "
                                 f"got {len(v)}")
        for i in range(n):
            image = as_image(images[i], f"images[{i}]", func)
            props = self.propose(image) if proposals is None else proposals[i]
            try:
                yield make_record(boxes[i], labels[i], props,
                                  lambda w, image=image: self.extractor.pool(image, w),
                                  self.n_classes,
                                  difficult=None if difficult is None else difficult[i])
            except (ValueError, TypeError) as err:
                raise type(err)(f"{func}: image {i}: {err}") from None

    def records(self, images, boxes, labels, proposals=None, difficult=None) -> list:
        """:meth:`iter_records` as a list (every image's windows and features in memory)."""
        return list(self.iter_records(images, boxes, labels, proposals, difficult))

    def fit(self, images, boxes, labels, proposals=None, difficult=None) -> Detector:
        """Compute the records of the training images and train the head; returns ``self``."""
        return self.fit_records(self.records(images, boxes, labels, proposals, difficult))

    def fit_records(self, records) -> Detector:
        """Train the head on a re-iterable of :class:`ImageRecord` (e.g. a feature store)."""
        self.head.fit(records)
        return self

    # ------------------------------------------------------------------ inference
    def detect(self, image, proposals=None):
        """Detections of one image: ``(boxes (D, 4), scores (D,), labels (D,))``.

        An image without windows gives three empty arrays.
        """
        func = "Detector.detect"
        if self.head.svm_w is None:
            raise RuntimeError(f"{func}: call fit() first")
        image = as_image(image, "image", func)
        props = self.propose(image) if proposals is None else proposals
        props = check_boxes(props, "proposals", func)
        pooled = self.extractor.pool(image, props) if len(props) else np.zeros((0, 0))
        return self.head.detect_windows(props, pooled, image.shape)

    def predict(self, images, proposals=None) -> list:
        """:meth:`detect` for each image; a list of ``(boxes, scores, labels)``."""
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"Detector.predict: proposals must have one entry per image "
                             f"({len(images)}), got {len(proposals)}")
        return [self.detect(images[i], None if proposals is None else proposals[i])
                for i in range(len(images))]


class SPPDetector(Detector):
    """``Detector(SPPFeatures(trunk, **options), DetectionHead(n_classes, fc=fc, **head_options))``.

    Parameters
    ----------
    trunk : conv layers (see :class:`~tinyspp.detect.features.SPPFeatures`)
    n_classes : int
    fc : fc layers for ``head_options={"features": "fc"}``, optional
    device : {"cpu", "gpu"}
    proposal_options : dict, optional
        For :func:`~tinyspp.detect.proposals.selective_search`.
    head_options : dict, optional
        Keyword arguments of :class:`~tinyspp.detect.head.DetectionHead`.
    **options
        Keyword arguments of :class:`~tinyspp.detect.features.SPPFeatures` (levels, mode,
        scales, input_size, mapping, mean, std).
    """

    def __init__(self, trunk, n_classes: int, *, fc=None, device: str = "cpu",
                 proposal_options=None, head_options=None, **options):
        super().__init__(SPPFeatures(trunk, device=device, **options),
                         DetectionHead(n_classes, fc=fc, device=device, **(head_options or {})),
                         proposal_options=proposal_options)


__all__ = ["Detector", "SPPDetector", "ImageRecord"]
