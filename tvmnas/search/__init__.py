"""DEff-ARTS: differentiable, hardware-aware architecture search over the 'darts' and 'chain' spaces.

ops (candidate tables), genotype (the result value), darts_supernet / chain_supernet (the spaces),
cost (CostModel protocol, MacCostModel, the loss term), architect (alpha step), search (the loop),
sweep (lambda sweep and Pareto front). Retraining lives in tvmnas.train, networks in tvmnas.models.
"""
