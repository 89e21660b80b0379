"""Bulk scoring on Ray Data, with the service's own core: the same ONNX files, inputs, tasks and thresholds.

Not part of the serving path: nothing in `service.app` or the protocols imports it, and it needs the `bulk`
extra (`pip install 'autoencoder-serving[bulk]'`, which brings Ray Data). Its parts:

- `columns`  which columns of a table are features, kept or series keys; the answer's columns per task;
- `scoring`  `score_dataset(ds, model)`: Ray Data's `map_batches` with a callable class holding one model
  per actor (`groupby(key).map_groups` for series models), each batch run through `Call.run_now`;
- `cli`      `python -m service.bulk score`: Parquet or CSV in, Parquet out, one line per failure.

    from service.bulk import load_model, score_dataset
    model = load_model(Path("models"), "digits-plain")
    scored = score_dataset(ray.data.read_parquet("rows/"), model, keep_columns=["id"])
    scored.write_parquet("scores/")
"""

from service.bulk.columns import BULK_TASKS, BulkInputError
from service.bulk.scoring import load_model, score_dataset

__all__ = ["BULK_TASKS", "BulkInputError", "load_model", "score_dataset"]
