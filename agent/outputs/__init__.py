"""Outputs: the flat record, the JSON log and the terminal view, metrics, the gRPC exporter."""
