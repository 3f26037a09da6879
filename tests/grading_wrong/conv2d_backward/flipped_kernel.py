"""Wrong: flips the kernel (true convolution) in both gradients, although the forward is a
cross-correlation."""
from _loops import backward


def conv2d_backward(dout, x, w, stride, pad):
    return backward(dout, x, w, stride, pad, flip=True)
