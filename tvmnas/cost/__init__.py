"""Learned cost models: profile data, per-target XGBoost surrogates over kernel features, and the
differentiable cost distilled from them for the search. Cycles are timing-table estimates."""
