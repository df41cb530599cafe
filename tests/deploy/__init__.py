"""Helpers of the offline deploy checks (tests/test_deploy_*.py)."""
