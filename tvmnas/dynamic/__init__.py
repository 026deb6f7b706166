"""Dynamic DNNs: one weight-shared super-network, K sub-networks switched at run time in one C artifact."""
