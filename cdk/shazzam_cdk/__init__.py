"""Shazzam for Clothes as one CDK v2 stack, generated from shazzam.wiring.FUNCTIONS."""
