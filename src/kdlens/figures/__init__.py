"""Matplotlib drawing only: arrays (or result objects read by their fields) in, ``Figure`` out.

A low layer (just above config): it computes no statistics and imports nothing of kdlens but
:mod:`kdlens.errors`, so every layer above — explain, studies, report, cli — may draw with it.
"""
