"""The model zoo: each model a Pyro program (+ guide) with its networks kept apart.

>>> import models
>>> "rbm" in models.available()
True
"""

from models.registry import available, entry, get, register
from models.textbook import Burglary, Chain, Collider, EightSchools, Fork, MatrixFactorization
from models.rbm import RBM
from models.gan import GAN

__all__ = [
    "available", "get", "entry", "register",
    "Chain", "Fork", "Collider", "Burglary", "EightSchools", "MatrixFactorization",
    "RBM", "GAN",
]
