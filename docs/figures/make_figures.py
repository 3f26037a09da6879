"""Draw the README's overview figure: ``python docs/figures/make_figures.py``.

Writes ``docs/figures/spp_overview.png``: two images of different sizes and aspect ratios go
through the same convolutional trunk (total stride 4) to feature maps of different sizes; the
pyramid's 4x4, 2x2 and 1x1 bins (tinyspp's default levels, drawn with ``tinyspp.viz.draw_bins``)
pool each map to the same 21 numbers per channel, so one fully connected layer serves both.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinyspp import viz  # noqa: E402
from tinyspp.bins import spp_output_length  # noqa: E402
from tinyspp.data import make_synthetic, resize  # noqa: E402
from tinyspp.nn.models import TRUNK_STRIDE  # noqa: E402

HERE = Path(__file__).resolve().parent
LEVELS, CHANNELS = (4, 2, 1), 64


def main(path: Path = HERE / "spp_overview.png") -> Path:
    viz.setup()
    data = make_synthetic(1, classes=("star", "crescent"), size_range=(32, 64), seed=3)
    shapes = [(32, 56), (44, 36)]  # (H, W) of the two inputs
    fig, axes = plt.subplots(2, 5, figsize=(10.5, 4.6),
                             gridspec_kw={"width_ratios": [1.3, 1, 1, 1, 1.2]})
    D = spp_output_length(CHANNELS, LEVELS)
    for row, (img, (H, W)) in enumerate(zip(data.images, shapes)):
        a = axes[row]
        x = resize(img, H, W)
        a[0].imshow(np.clip(x.transpose(1, 2, 0), 0, 1))
        a[0].set_title(f"input image {H}x{W} px")
        a[0].axis("off")
        h, w = H // TRUNK_STRIDE, W // TRUNK_STRIDE
        for col, n in enumerate(LEVELS, start=1):
            viz.draw_bins(a[col], h, w, n, title=False)
            a[col].set_title(f"conv map {h}x{w}: {n}x{n} bins")
            a[col].set_xticks([])
            a[col].set_yticks([])
        a[4].axis("off")
        a[4].barh(0, D, color="tab:blue")
        a[4].set_xlim(0, D * 1.05)
        a[4].set_ylim(-1.5, 1.5)
        a[4].text(D / 2, 0.9, f"{CHANNELS} x (16 + 4 + 1)\n= {D} numbers", ha="center",
                  va="bottom", fontsize=9)
        a[4].text(D / 2, -0.9, "-> the same fc layers", ha="center", va="top", fontsize=9)
    fig.suptitle("Spatial pyramid pooling: any input size, one fixed-length vector "
                 "(He et al. 2014, Sec. 2.3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(f"wrote {main()}")
