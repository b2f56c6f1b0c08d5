"""The IC-LoRA model: the FLUX.1-Fill backbone (real or tiny), its codec, the three-panel grid and masks,
the flow-matching objective with the cycle loss, training and sampling."""
