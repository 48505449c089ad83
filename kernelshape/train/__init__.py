"""Reference trainer: a network description trained as it is described (any topology layer:
chains, residual / concatenation / LayerNorm DAGs, convnets, the BatchNorm baseline).

``train(net, TrainConfig(...))`` (or the config's fields as keywords) runs, ``resume(out_dir)``
continues a run exactly; see docs/training.md. The JAX backend (``kernelshape.train.jax_backend``,
``jax_trainer``, ``jax_optim``) is imported only when a run asks for it (extra ``[jax]``).
Names are imported lazily (the command line reads ``TrainConfig`` while building its parser).
"""

from kernelshape import lazy_exports

_EXPORTS = {
    "METHODS": "kernelshape.train.config",
    "TrainConfig": "kernelshape.train.config",
    "Dataset": "kernelshape.train.data",
    "load_data": "kernelshape.train.data",
    "load_npz": "kernelshape.train.data",
    "standardize": "kernelshape.train.data",
    "per_location_normalization": "kernelshape.runtime.numpy",
    "Backend": "kernelshape.train.loop",
    "TrainResult": "kernelshape.train.loop",
    "resume": "kernelshape.train.loop",
    "train": "kernelshape.train.loop",
    "NumpyBackend": "kernelshape.train.numpy_backend",
    "Optimizer": "kernelshape.train.optim",
    "adam": "kernelshape.train.optim",
    "kfac": "kernelshape.train.optim",
    "make_optimizer": "kernelshape.train.optim",
    "sgd": "kernelshape.train.optim",
    "Shaping": "kernelshape.train.shaping",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
