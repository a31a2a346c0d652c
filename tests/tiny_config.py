"""The small training config of the end-to-end tests, with 'section.field' overrides."""
from unode_jax.configs import default


def tiny_config(**overrides):
    config = default.get_config()
    config.data.name = 'digits'
    config.data.image_size = 16
    config.model.name = 'tiny'
    config.batch_size = 8
    config.optim.num_epochs = 2
    config.optim.warmup_epochs = 1
    config.progress_bar = False
    for k, v in overrides.items():
        section, _, field = k.rpartition('.')
        setattr(config[section] if section else config, field, v)
    return config
