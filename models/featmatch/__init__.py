"""Implicit feature matching (Deep Implicit Feature Matching style): deform a source mesh toward a target
by tracking its vertices through the features of a latent-coded implicit occupancy network while the code
moves from the source's to the target's.

Roles: config (dataclasses), model (network + features), data (procedural collections with parts, mesh
folders), training (autodecoder), fitting (codes for new shapes), matching (Gauss-Newton feature
matching), baselines, pipeline (the whole deformation + figures), bench.
"""
