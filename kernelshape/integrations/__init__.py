"""Frontends that derive a network description from a model written in a framework
(``kernelshape.integrations.torch``: PyTorch via ``torch.fx``; needs the ``[torch]`` extra)."""
