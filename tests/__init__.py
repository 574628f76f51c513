"""Tests for proxpi-min (a package so that ``tests.support`` imports from the repo root)."""
