"""Test support for proxpi-min: real distributions, a fake upstream index, proxy runners."""
