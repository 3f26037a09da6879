"""Dataset-scale SPP-net detection: a chunked feature store, filled and read by Dask tasks.

SPP-net computes the conv features of an image once and pools every window from them (paper
Sec. 4). On a real data set (VOC 2007: 5,011 trainval + 4,952 test images, ~2,000 windows each)
those pooled features no longer fit one process's memory, so -- like the authors, who cached
them on disk -- we write them to a store and train the SVMs from it, image by image.

Modules (import the one you need; they need the ``scale`` extra: ``dask[distributed]``, ``zarr``):

``store``
    :class:`~tinyspp.scale.store.FeatureStore`: the Zarr layout (one group per image: windows,
    labels, overlaps, features), a completion marker with checksums written last.
``sources``
    ``voc:PATH`` data, indexed by the driver, read one image at a time by the workers.
``cluster``
    :func:`~tinyspp.scale.cluster.connect`: a ``distributed.LocalCluster`` sized to the machine,
    an existing scheduler, or no cluster at all (in-process).
``extract``
    :func:`~tinyspp.scale.extract.extract_store`: one Dask task per image (proposals, conv
    features once per scale, region-pooled features of every window); resumable.
``train``
    :func:`~tinyspp.scale.train.train_from_store`: the per-class SVMs with hard-negative mining
    and the box regressors, reading the store image by image.
``evaluate``
    :func:`~tinyspp.scale.evaluate.evaluate_store`: detections per test image as Dask tasks, then
    VOC average precision.

The command line is ``python -m tinyspp detect extract | train | evaluate`` (docs/scale.md).
"""
