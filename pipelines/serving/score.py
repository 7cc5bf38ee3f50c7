"""Batch scoring on Spark: a backlog of image files or table rows through a registered model.

    python -m pipelines score digits --input photos/ --output scores.parquet            # the champion
    python -m pipelines score heart --input rows.csv --output scores.parquet --model models:/heart/3
    python -m pipelines score skin --input s3a://archive/lesions/ --output ... --master spark://host:7077

Images are read with Spark's `binaryFile` source (every file under the folder), decoded in the
executors as `predict` decodes a file (`pipelines.data.images.read_image`), and scored by the
registered MLflow model itself through `mlflow.pyfunc.spark_udf` (the model `serve` answers
with, loaded once per Python worker). Tables are CSV (with a header) or Parquet, one row per
example, the model's columns by name. The result is Parquet: `path` (images) or `row` (tables),
`probabilities` in the order of the class names, `label`, `model_version`, and `error` for a
file that could not be decoded: such a file never stops the job, it is counted as refused.

The same command runs against a cluster with `--master spark://...` (or `yarn`, `k8s://...`);
the executors need this package and its dependencies installed (the decoding runs there) and
access to the tracking server the model is loaded from, and `--input`/`--output` must be paths
every executor can reach (HDFS, S3, a shared file system).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from pipelines.core.console import say
from pipelines.core.errors import PipelineError, UsageError
from pipelines.data.images import read_image_bytes
from pipelines.tracking.tracker import mlflow_client

TABLE_SUFFIXES = (".csv", ".parquet")


def model_reference(usecase: str, model: str | None) -> tuple[str, str]:
    """(model URI, its registered version) of `--model`: models:/<name>@<alias> or /<version>
    (default: the champion); runs:/<id>/model scores a run's model (version: the run)."""

    uri = model or f"models:/{usecase}@champion"
    client = mlflow_client()
    alias = re.fullmatch(r"models:/([^/@]+)@(.+)", uri)
    numbered = re.fullmatch(r"models:/([^/@]+)/(\d+)", uri)
    try:
        if alias:
            return uri, str(client.get_model_version_by_alias(alias[1], alias[2]).version)
        if numbered:
            return uri, str(client.get_model_version(numbered[1], numbered[2]).version)
    except Exception as exc:  # noqa: BLE001 - MLflow's "not found", or no registry at all
        raise PipelineError(f"{uri}: not in the model registry of {client.tracking_uri} ({type(exc).__name__}); "
                            f"train first (make train-{usecase}) or name a version, e.g. --model models:/{usecase}/1") from None
    if uri.startswith("runs:/"):
        return uri, uri.split("/")[1]
    raise UsageError(f"--model {uri}: score loads the model through MLflow: use models:/{usecase}@champion, "
                     f"models:/{usecase}/<version> or runs:/<run id>/model")


def model_contract(uri: str) -> dict:
    """The served contract logged with the model: class names and the input (image shape or columns)."""
    import mlflow

    metadata = mlflow.models.get_model_info(uri).metadata or {}
    contract = metadata.get("input_contract")
    if not contract:
        raise PipelineError(f"{uri} has no input contract in its MLmodel metadata (logged before `serve` existed?); retrain it")
    classes = [name for name in contract["output"] if name != "label"]
    result = {"classes": classes, "usecase": metadata.get("usecase")}
    if "columns" in contract:
        result["columns"] = list(contract["columns"])
    else:
        # "uint8 [batch, 28, 28]": the sizes after the batch
        result["shape"] = tuple(int(size) for size in re.findall(r"\d+", contract["images"].split("[", 1)[1]))
    return result


def spark_session(master: str, usecase: str):
    """A session on `master`; local masters bind the driver to the loopback address only."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the executors' Python: this one, with this package
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(master).appName(f"pipelines score {usecase}")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               # The model answers at most max_batch_size (1024) examples a call: Arrow batches below it.
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "512"))
    if master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - no Java, a master not reachable: one line
        raise PipelineError(f"Spark ({master}) did not start: {type(exc).__name__}: {str(exc).splitlines()[0][:300]} "
                            "(Spark 4 needs Java 17 or newer on PATH or in JAVA_HOME)") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_score(usecase: str, input_path: str, output: str, model: str | None = None, master: str = "local[2]") -> dict:
    """The `score` verb: score every file (or row) of `input_path`, write `output`, return the counts."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise PipelineError("score runs on Spark: pip install -e '.[spark]' (pyspark; Spark 4 needs Java 17+)") from None
    local = "://" not in input_path
    if local and not Path(input_path).exists():
        raise PipelineError(f"--input {input_path}: no such file or folder")
    uri, version = model_reference(usecase, model)
    contract = model_contract(uri)
    if contract.get("usecase") not in (None, usecase):
        raise PipelineError(f"{uri} is a '{contract['usecase']}' model, not '{usecase}'")
    table = "columns" in contract
    if table and not input_path.lower().endswith(TABLE_SUFFIXES) and not (local and Path(input_path).is_dir()):
        raise UsageError(f"--input {input_path}: {usecase} scores table rows: give a .csv or .parquet file (or a folder of them)")
    say(f"[{usecase}] scoring {input_path} with {uri} (version {version}) on Spark {master}")
    spark = spark_session(master, usecase)
    try:
        frame = _table_rows(spark, input_path, contract) if table else _image_rows(spark, input_path, contract)
        scored = _scored(spark, frame, uri, version, contract)
        scored.write.mode("overwrite").parquet(output)
        written = spark.read.parquet(output)
        refused = written.where("error IS NOT NULL").count()
        total = written.count()
    finally:
        spark.stop()
    say(f"[{usecase}] {total - refused} scored, {refused} refused (see their `error`), written to {output}")
    return {"scored": total - refused, "refused": refused, "output": output, "model": uri, "model_version": version}


def _image_rows(spark, input_path: str, contract: dict):
    """(key `path`, flat `pixels` or None, `error` or None) for every file under `input_path`."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

    shape = contract["shape"]
    decoded_type = StructType([StructField("pixels", ArrayType(IntegerType())), StructField("error", StringType())])

    def decode(paths, contents):
        pixels, errors = [], []
        for path, content in zip(paths, contents):
            try:
                pixels.append(read_image_bytes(bytes(content), shape, name=path).reshape(-1).astype(np.int32))
                errors.append(None)
            except PipelineError as exc:
                pixels.append(None)
                errors.append(str(exc))
        return pd.DataFrame({"pixels": pixels, "error": errors})

    # Spark reads the kind of pandas UDF from real annotations (this module's are strings: `annotations`).
    decode.__annotations__ = {"paths": pd.Series, "contents": pd.Series, "return": pd.DataFrame}
    decode = pandas_udf(decode, decoded_type)

    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(input_path)
    decoded = files.select("path", decode("path", "content").alias("decoded"))
    return decoded.select(F.col("path").alias("key"), "decoded.pixels", "decoded.error")


def _table_rows(spark, input_path: str, contract: dict):
    """(key `row`, the model's columns as doubles, `error` naming a cell that is not a number)."""
    from pyspark.sql import functions as F

    lowered = input_path.lower()
    if lowered.endswith(".parquet") or (Path(input_path).is_dir() and any(Path(input_path).glob("*.parquet"))):
        rows = spark.read.parquet(input_path)
    else:
        rows = spark.read.option("header", True).csv(input_path)  # strings: a bad cell is reported, not guessed at
    missing = [name for name in contract["columns"] if name not in rows.columns]
    if missing:
        raise PipelineError(f"--input {input_path}: missing column(s) {', '.join(missing)}; the model takes "
                            f"{', '.join(contract['columns'])}")
    rows = rows.withColumn("key", F.monotonically_increasing_id())
    casts = {name: F.col(f"`{name}`").cast("double") for name in contract["columns"]}
    problems = [F.when(F.col(f"`{name}`").isNotNull() & cast.isNull() & (F.trim(F.col(f"`{name}`").cast("string")) != ""),
                       F.concat(F.lit(f"column {name}: not a number: "), F.col(f"`{name}`").cast("string")))
                for name, cast in casts.items()]
    return rows.select("key", *(cast.alias(name) for name, cast in casts.items()), F.coalesce(*problems).alias("error"))


def _scored(spark, frame, uri: str, version: str, contract: dict):
    """Rows without an error through the model's spark_udf; refused rows kept with their error."""
    import mlflow.pyfunc
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    classes = contract["classes"]
    result_type = StructType([*(StructField(name, DoubleType()) for name in classes), StructField("label", StringType())])
    model = mlflow.pyfunc.spark_udf(spark, uri, result_type=result_type, env_manager="local")
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)  # decoded once, read by both branches below
    good, bad = frame.where("error IS NULL"), frame.where("error IS NOT NULL")
    if "columns" in contract:
        argument = F.struct(*(F.col(f"`{name}`") for name in contract["columns"]))
    else:
        argument = F.struct(F.col("pixels").alias("image"))
    predicted = good.withColumn("prediction", model(argument))
    key = "row" if "columns" in contract else "path"
    probabilities = F.array(*(F.col("prediction").getField(name) for name in classes))
    answered = predicted.select(F.col("key").cast("string").alias(key), probabilities.alias("probabilities"),
                                F.col("prediction.label").alias("label"), F.lit(version).alias("model_version"),
                                F.lit(None).cast("string").alias("error"))
    refused = bad.select(F.col("key").cast("string").alias(key), F.lit(None).cast("array<double>").alias("probabilities"),
                         F.lit(None).cast("string").alias("label"), F.lit(version).alias("model_version"), "error")
    return answered.unionByName(refused)
