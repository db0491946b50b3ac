"""Sensing and volumetric geometry: camera model, frames, sources, deformation graph, TSDF, fusion loop.

fusion/ is the bottom layer: it imports nothing from app/, models/ or tracker/.
"""
