"""LPDC-Net 4D reconstruction (Tang et al., CVPR 2021) with an Occupancy-Flow-style ODE baseline.

Roles (as in Occupancy Flow / LPDC's `im2mesh/<method>/`): `config` (frozen dataclasses, presets),
`model` (spatio-temporal encoder, CBN occupancy decoder, displacement field, ODE baseline), `data`
(procedural 4D shapes, mesh-sequence and D-FAUST loaders, training examples), `training`
(`train_cli`, DDP under torchrun), `generation` (MISE mesh at t0, all frames in one batched pass),
`metrics`, `pipeline` (the `nrstudio lpdc` run with progress / cancel callbacks), `bench`.
"""
