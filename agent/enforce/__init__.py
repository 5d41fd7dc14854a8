"""Enforcement: in-kernel exec rules, the NRI and OCI pre-start gates, post-start kills."""
