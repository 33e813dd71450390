"""Kedro project settings: hooks and config loader."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

CONFIG_LOADER_CLASS = OmegaConfigLoader
# `${oc.env:MLFLOW_TRACKING_URI, sqlite:///mlflow.db}` in mlflow.yml: a team server by env, sqlite by default.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"oc.env": oc.env},
}
