"""Models trained elsewhere: Hugging Face diffusers pipelines read as our checkpoints (docs/diffusers.md).

- `adapter`: every prediction type (score, noise/epsilon, v_prediction, sample) as a score and as
  e_theta, in one place (pure torch);
- `config`: `DiffusersUNetConfig`, the network config of a diffusers `UNet2DModel`, checked and
  bounded without importing diffusers;
- `unet2d`: the network itself (imports diffusers, lazily from the factory);
- `archive`: reading a pipeline folder uploaded as .zip / .tar(.gz), member by member, bounded;
- `convert`: a pipeline's files -> our checkpoint config and tensors (parameter cap first).
"""
