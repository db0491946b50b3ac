"""NeuralQAAD (Wagner & Schwanecke, VISAPP 2022): compress a consistent set of point clouds into a small
autodecoder (shared layers + patch heads as grouped convolutions, a latent code per cloud) trained toward
the EMD through a quadratic-assignment surrogate; `.qaad` file format; the AtlasNetV2-style baseline.

Roles (as in the other shape methods): `model` (networks), `assignment` (QAAD_GREEDY / QAAD_REASSIGNMENT),
`training` (fit), `format` (the .qaad file), `inference` (compress / decompress, panel-friendly runner),
`data` (loading and normalising inputs), `bench` (the `qaad` bench section).
"""
