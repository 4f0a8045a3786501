"""Trunk trajectories on disk: the store (format, writer, reader) and the snapshot callback."""
