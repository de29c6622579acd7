"""The model zoo: each model a Pyro program (+ guide) with its networks kept apart.

>>> import models
>>> "rbm" in models.available()
True
"""

from models.registry import Preset, available, entry, get, preset, register
from models.textbook import Burglary, Chain, Collider, EightSchools, Fork, MatrixFactorization
from models.classic import BayesianLogisticRegression, GaussianMixture, NormalNormal
from models.rbm import RBM, GaussianRBM
from models.boltzmann import BoltzmannMachine
from models.dbn import DBN
from models.vae import VAE
from models.vqvae import VQVAE
from models.ebm import EBM, ClassifierEBM, GaussianEBM
from models.gan import GAN
from models.flows import IAF, MAF, NICE, Flow, Glow, RealNVP, SplineFlow
from models.autoregressive import Autoregressive, AutoregressiveModel, MaskEnsemble
from models.fvsbn import FVSBN
from models.nade import NADE
from models.made import MADE, MixtureMADE
from models.pixelcnn import PixelCNN
from models.ddpm import DDPM, ConditionalDDPM
from models.ncsn import NCSN

__all__ = [
    "available", "get", "entry", "preset", "register", "Preset",
    "Chain", "Fork", "Collider", "Burglary", "EightSchools", "MatrixFactorization",
    "NormalNormal", "BayesianLogisticRegression", "GaussianMixture",
    "RBM", "GaussianRBM", "BoltzmannMachine", "DBN",
    "VAE", "VQVAE", "GAN", "EBM", "GaussianEBM", "ClassifierEBM",
    "Flow", "NICE", "RealNVP", "MAF", "IAF", "Glow", "SplineFlow",
    "FVSBN", "NADE", "MADE", "MixtureMADE", "PixelCNN", "Autoregressive", "AutoregressiveModel", "MaskEnsemble",
    "DDPM", "ConditionalDDPM", "NCSN",
]
