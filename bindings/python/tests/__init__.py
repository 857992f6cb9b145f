"""Tests of the dmxp Python package (run with pytest from bindings/python)."""
