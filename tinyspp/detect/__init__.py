"""Object detection with SPP-net (paper Sec. 4): geometry, proposals, detector, evaluation, R-CNN.

Modules: ``geometry`` (window-to-feature mapping, IoU, NMS, box regression), ``proposals``
(selective search), ``data`` (synthetic set, VOC loader), ``detector`` (``SPPDetector``),
``rcnn`` (the R-CNN baseline), ``evaluate`` (VOC average precision), ``demo``.
Import the one you need, e.g. ``from tinyspp.detect.detector import SPPDetector``.
"""
