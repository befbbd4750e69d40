"""Simulated devices running the real edge_agent code, with data generators and drift injection."""
