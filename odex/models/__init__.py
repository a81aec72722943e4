"""Models, one module per family; each is built by `hydra.utils.instantiate(cfg.model, info=...,
solver=..., grad=...)` from its YAML in conf/model/."""
