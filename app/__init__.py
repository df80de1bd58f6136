"""Tandem: an open server for interactive, multi-turn workflows."""
