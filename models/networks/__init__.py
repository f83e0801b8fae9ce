"""Networks that map (x, s) to a tensor shaped like x; they know nothing of processes.

- `mlp`: the paper's MLP core (Fourier features, LayerNorm, sigmoid) and its config;
- `mlp_fused`: a hand-written forward/backward of that MLP, for speed;
- `unet`: a small U-Net with attention and optional classes, for images (C, H, W);
- `inputs`: the input checks every network runs;
- `factory`: configs <-> networks, and the default network for a data shape.
"""

from models.networks.factory import NetworkConfig, build_network, default_network_config, network_config_from_dict
from models.networks.inputs import NetworkInputError, check_inputs
from models.networks.mlp import FourierFeatures, MLPConfig, PaperMLP
from models.networks.unet import UNet, UNetConfig

__all__ = [
    "FourierFeatures",
    "MLPConfig",
    "NetworkConfig",
    "NetworkInputError",
    "PaperMLP",
    "UNet",
    "UNetConfig",
    "build_network",
    "check_inputs",
    "default_network_config",
    "network_config_from_dict",
]
