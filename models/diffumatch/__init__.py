"""DiffuMatch: deep functional maps regularised by a diffusion prior over functional maps (SDS).

Modules: spectral (Laplacian, eigenbasis, geodesics, WKS/HKS), fmaps (functional-map conversions and
ZoomOut; the one naming convention of the package is stated there), network (DiffusionNet-style features
and the FMReg solve), prior (denoiser over k x k maps), data (registered shape collections), training
(`nrstudio train diffumatch`), matching (per-pair zero-shot matching and the two baselines), bench.
"""
