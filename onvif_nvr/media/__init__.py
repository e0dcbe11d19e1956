"""Shared media vocabulary: access units, codec parameters and time units (no I/O)."""
