# %% [markdown]
# # Compare training runs
#
# The MLflow UI's compare view (`make ui`, select runs, *Compare*) in code: every training
# run of an experiment side by side, its key params and test metrics, then the registry.
# A jupytext "percent" notebook: open it in Jupyter/VS Code as a notebook or run it as a
# script. The store is `mlflow.tracking_uri` of the config (`MLFLOW_TRACKING_URI` wins).

# %%
import os

import mlflow
import pandas as pd

from trademl.registry import list_models

tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
experiment = os.environ.get("TRADEML_EXPERIMENT", "trademl")
mlflow.set_tracking_uri(tracking_uri)

# %% [markdown]
# ## Runs, best first

# %%
runs = mlflow.search_runs(
    experiment_names=[experiment], order_by=["metrics.test_balanced_accuracy DESC"]
)
params = [
    "tags.model_type",
    "params.model.max_depth",
    "params.labels.method",
    "params.labels.horizon",
    "params.seed",
]
metrics = [
    "metrics.test_balanced_accuracy",
    "metrics.test_accuracy",
    "metrics.test_f1_macro",
    "metrics.test_log_loss",
    "metrics.test_ic",
]
columns = ["run_id", *[c for c in params + metrics if c in runs.columns]]
table = runs[columns].rename(columns=lambda c: c.split(".", 1)[-1])
with pd.option_context("display.width", 160, "display.max_columns", 20):
    print(table.head(20).to_string(index=False))

# %% [markdown]
# ## Metrics by model type

# %%
if "tags.model_type" in runs:
    summary = runs.groupby("tags.model_type")["metrics.test_balanced_accuracy"]
    print(summary.agg(["count", "mean", "max"]).round(4).to_string())

# %% [markdown]
# ## Registered versions

# %%
print(pd.DataFrame(list_models(tracking_uri=tracking_uri)).to_string(index=False))
