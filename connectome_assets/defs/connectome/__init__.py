"""Connectome stage: dataset sources -> neurons -> synapses -> graph_edges, with blocking checks."""
