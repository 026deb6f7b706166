"""DEff-ARTS: differentiable, hardware-aware architecture search over the 'darts' and 'chain' spaces."""
