"""Object detection with SPP-net (paper Sec. 4): proposals, extractors, one shared head, R-CNN.

Modules, in the order a window travels:

- ``geometry`` -- boxes, window-to-feature mapping (Appendix A), IoU, NMS, box regression coding;
- ``proposals`` -- selective search (``mode="fast"``, the paper's 8 groupings);
- ``features`` -- :class:`~tinyspp.detect.features.SPPFeatures`: conv once per image and scale,
  region SPP per window;
- ``rcnn`` -- :class:`~tinyspp.detect.rcnn.RCNNFeatures`: warp each window, conv per window;
- ``head`` -- :class:`~tinyspp.detect.head.DetectionHead`: per-class SVMs with hard-negative
  mining, box regression, NMS; trains from per-image
  :class:`~tinyspp.detect.head.ImageRecord` s;
- ``detector`` -- :class:`~tinyspp.detect.detector.Detector` = proposals + extractor + head
  (``SPPDetector``, ``RCNNDetector``: the two compositions);
- ``finetune`` -- fc fine-tuning on cached features (the paper), trunk fine-tuning (Fast R-CNN);
- ``data``, ``voc`` -- the synthetic set, VOC folders, :func:`~tinyspp.detect.data.as_image`;
- ``evaluate`` -- VOC average precision as the devkit defines it.

Import the one you need, e.g. ``from tinyspp.detect.detector import SPPDetector``.
"""
