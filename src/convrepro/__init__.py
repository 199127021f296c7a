"""convrepro: reproductions of three landmark convolutional networks with hand-written layers."""

__version__ = "0.1.0"
