"""REST serving end to end, with real processes: train the digits and heart samples once, start
`python -m pipelines serve` on a free loopback port in its own process group, send the README's
requests and every kind of bad request over HTTP, and stop the server by its PID.

Also: the serve verb's one-line errors, and that `models/<usecase>/<version>/` stays loadable
by TensorFlow Serving (layout and `serving_default` signature, read with saved_model_cli)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_quiet, run_cli, trained_once

DIGITS_FAST = {"data.source": "sample", "train.epochs": 1, "data.train_limit": 400}
HEART_FAST = {"validation.cv_repeats": 1, "validation.cv_folds": 2, "tabular.external_validation": False, "train.epochs": 5}
# The curl lines of the README and docs/.
README = "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


# Helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(usecase: str, model: str | None, env: dict, log: Path, startup_seconds: float = 120, options=()):
    """`python -m pipelines serve` (the champion when `model` is None) in its own process group;
    yields `post(body)` (its `.port` the server's); always stopped."""
    port = free_port()
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines", "serve", usecase, *(["--model", model] if model else []),
             "--port", str(port), "--workers", "1", *options],
            cwd=REPO, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            assert process.poll() is None, f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /ping answer in {startup_seconds} s:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                if request(port, "GET", "/ping")[0] == 200:
                    break
            time.sleep(0.5)
        def post(body, content_type="application/json"):
            return request(port, "POST", "/invocations", body, content_type)

        post.port = port
        yield post
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def request(port: int, method: str, path: str, body=None, content_type: str = "application/json") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        connection.request(method, path, body=body, headers={"Content-Type": content_type} if body is not None else {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def readme_curl_bodies(usecase_marker: str) -> list[str]:
    """The JSON bodies of the README's `curl ... /invocations` lines mentioning `usecase_marker`."""
    bodies = []
    for line in re.findall(r"^curl .*invocations.*$", README, flags=re.MULTILINE):
        if usecase_marker not in line:
            continue
        match = re.search(r"-d @(\S+)", line) or re.search(r"-d '(.*)'", line)
        assert match, line
        text = match.group(1)
        bodies.append((REPO / text).read_text() if line[match.start():].startswith("-d @") else text)
    return bodies


def assert_probabilities(predictions: list[dict], class_names: list[str], rows: int) -> None:
    assert len(predictions) == rows
    for record in predictions:
        assert set(record) == {*class_names, "label"}
        probabilities = [record[name] for name in class_names]
        assert abs(sum(probabilities) - 1.0) < 1e-4 and all(0.0 <= p <= 1.0 for p in probabilities)
        assert record["label"] in class_names


def assert_client_error(status: int, text: str, what: str) -> str:
    """4xx (never 5xx) and a message; returns the message."""
    assert 400 <= status < 500, f"{what}: HTTP {status} {text[:300]}"
    try:
        return json.loads(text)["message"]
    except (ValueError, KeyError):
        return text  # MLflow answers a wrong content type (415) in plain text


# Fixtures


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    with trained_once(tmp_path_factory, "digits", DIGITS_FAST) as run:
        yield run


@pytest.fixture(scope="module")
def heart(tmp_path_factory):
    with trained_once(tmp_path_factory, "heart", HEART_FAST) as run:
        yield run


# Tests


def test_serve_verb_errors_are_one_line(digits):
    unknown = run_cli("serve", "nonsense", env=digits["env"])
    assert unknown.returncode == 2 and unknown.stderr.strip().count("\n") == 0 and "unknown use case" in unknown.stderr
    no_alias = run_cli("serve", "digits", "--model", "models:/digits@nope", env=digits["env"])
    assert no_alias.returncode == 1 and "Traceback" not in no_alias.stderr
    assert "alias 'nope'" in no_alias.stderr and "models:/digits/1" in no_alias.stderr
    no_version = run_cli("serve", "digits", "--model", "models:/digits/99", env=digits["env"])
    assert no_version.returncode == 1 and "version 99" in no_version.stderr and no_version.stderr.count("\n") == 1


def test_model_folder_resolves_to_its_runs_logged_model(digits):
    from pipelines.serving.serve import is_loopback, resolve_model_uri

    with pytest.MonkeyPatch.context() as patch:
        for name, value in digits["env"].items():
            patch.setenv(name, value)
        uri = resolve_model_uri("digits", digits["summary"]["exported_to"])
    assert uri == f"runs:/{digits['summary']['run_id']}/model"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


@pytest.fixture(scope="module")
def digits_server(digits, tmp_path_factory):
    """One digits server (the champion) for the module's tests: each start costs ~15 s. Its body
    limit is 3 MB: above the largest batch the model takes (1,024 zero images, ~2.4 MB of JSON)."""
    log = tmp_path_factory.mktemp("digits-server") / "server.log"
    with running_server("digits", None, digits["env"], log, options=("--max-body-mb", "3")) as post:
        post.log = log
        yield post


def test_digits_server_answers_class_names_and_refuses_bad_requests(digits, digits_server):
    from pipelines.data.loaders import load_dataset

    class_names = [str(name) for name in digits["spec"].class_names]
    images = load_dataset(digits["spec"]).test.x[:3].tolist()
    good = {"inputs": images[:1]}
    post = digits_server
    # Good requests: both request forms, batch 1 and a few; the README's own body too.
    for body, rows in [({"inputs": images[:1]}, 1), ({"instances": images[:1]}, 1),
                       ({"inputs": images}, 3), ({"instances": images}, 3)]:
        status, text = post(body)
        assert status == 200, text[:300]
        assert_probabilities(json.loads(text)["predictions"], class_names, rows)
    readme_bodies = readme_curl_bodies("digit")
    assert readme_bodies, "the README shows no digits curl request"
    for body in readme_bodies:
        status, text = post(body)
        assert status == 200, text[:300]
        assert_probabilities(json.loads(text)["predictions"], class_names, 1)

    one_image = images[0]
    bad = {
        # Our wrapper's checks: one-line reasons.
        "floats, scaled to [0, 1]": ({"inputs": [[[v / 255 for v in row] for row in one_image]]}, "floats"),
        "integral floats": ({"inputs": [[[float(v) for v in row] for row in one_image]]}, "floats"),
        "a value above 255": ({"inputs": [[[256] * 28] + one_image[1:]]}, "outside uint8"),
        "a negative value": ({"inputs": [[[-1] * 28] + one_image[1:]]}, "outside uint8"),
        "strings": ({"inputs": [[["a"] * 28] * 28]}, "strings"),
        "booleans": ({"inputs": [[[True] * 28] * 28]}, "true/false"),
        "null": ({"inputs": None}, "nulls"),
        "no batch dimension": ({"inputs": one_image}, "wrong rank"),
        "rank 4": ({"inputs": [[one_image]]}, "wrong rank"),
        "wrong shape": ({"inputs": [one_image[:27]]}, "wrong shape"),
        "empty batch": ({"inputs": []}, "empty batch"),
        "oversized batch": ({"inputs": [[[0] * 28] * 28] * 1025}, "exceeds the limit of 1024"),
        "a table instead of images": ({"dataframe_split": {"columns": ["a"], "data": [[1]]}}, "not as a table"),
        # The guard (pipelines/serving/guarded_app.py) or MLflow answers these with 4xx.
        "invalid JSON": ('{"inputs": [[1, 2', None),
        "a JSON list": ("[1, 2]", None),
        "unknown key": ({"images": images[:1]}, None),
        "both keys": ({"inputs": images[:1], "instances": images[:1]}, None),
        "ragged lists": ({"inputs": [[[0] * 28] * 27 + [[0] * 5]]}, None),
    }
    for what, (body, reason) in bad.items():
        message = assert_client_error(*post(body), what)
        if reason:
            assert reason in message and "\n" not in message, f"{what}: {message!r}"
    assert_client_error(*post(json.dumps(good), content_type="text/plain"), "wrong content type")

    status, text = post(good)  # the server survived all of that
    assert status == 200, text[:300]


def raw_exchange(port: int, head: bytes, chunks=()) -> tuple[int, float]:
    """Send `head` (request line and headers) and `chunks` on a raw socket; the status and seconds
    until the answer's first line: for bodies http.client cannot send (declared but never sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(head)
        with contextlib.suppress(OSError):  # the server may close once it has answered
            for chunk in chunks:
                sock.sendall(chunk)
        first = sock.recv(200).split(b"\r\n", 1)[0]
        return int(first.split()[1]), time.monotonic() - start


def test_hostile_bodies_get_4xx_cheaply_and_the_server_lives_on(digits_server):
    """Measured before the guard: 100,000 nested lists answered 500, a 48 MB body was parsed for 9 s."""
    post, port = digits_server, digits_server.port
    head = b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    timings = {}

    # Over the size limit: 413 from the Content-Length alone, the body never read (nor even sent).
    status, timings["50 MB declared, not sent"] = raw_exchange(port, head + b"Content-Length: 50000000\r\n\r\n")
    assert status == 413
    status, timings["50 MB declared, Expect: 100-continue"] = raw_exchange(
        port, head + b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
    assert status == 413
    # Sent whole by a client that does not wait for an answer (http.client): it still reads the 413.
    start = time.monotonic()
    status, text = post(json.dumps({"inputs": [[[0] * 28] * 28] * 1800}))  # 4.2 MB
    timings["4 MB sent"] = time.monotonic() - start
    assert status == 413 and "limit of 3 MB" in assert_client_error(status, text, "4 MB")
    # Chunked (no Content-Length): refused as soon as the count passes the limit.
    chunk = b"[" + b"0," * 500_000 + b"0]"
    status, timings["chunked, 4 MB"] = raw_exchange(
        port, head + b"Transfer-Encoding: chunked\r\n\r\n", [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 4 + [b"0\r\n\r\n"])
    assert status == 413

    # JSON Python's parser refuses: 400 with one line, before MLflow echoes the body back.
    unparseable = {
        "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "an integer of 5,000 digits": ('{"inputs": [' + "9" * 5000 + "]}", "4300 digits"),
        "not UTF-8": (b'{"inputs": "\xff"}', "not valid JSON"),
        "cut short": ('{"inputs": [[1, 2', "not valid JSON"),
    }
    for what, (body, reason) in unparseable.items():
        start = time.monotonic()
        status, text = post(body)
        timings[what] = time.monotonic() - start
        assert status == 400, f"{what}: HTTP {status} {text[:200]}"
        message = json.loads(text)["message"]
        assert reason in message and "\n" not in message, f"{what}: {message!r}"

    print("hostile bodies, seconds to the answer:", {what: round(seconds, 3) for what, seconds in timings.items()})
    assert max(timings.values()) < 5, timings  # the 4 MB sent whole included; before: 9 s for 48 MB
    status, text = post({"inputs": [[[0] * 28] * 28]})
    assert status == 200, text[:300]
    log = digits_server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert_quiet(log)  # a worker prints neither TensorFlow's C++ start-up lines nor MLflow's type-hint advice


def test_heart_server_takes_named_raw_columns(heart, tmp_path):
    metadata = json.loads((Path(heart["summary"]["exported_to"]) / "metadata.json").read_text())
    class_names, columns = metadata["class_names"], metadata["columns"]
    readme_bodies = readme_curl_bodies('"age"')
    assert readme_bodies, "the README shows no heart curl request"
    row = {"age": 63, "sex": 1, "cp": 1, "trestbps": 145, "chol": 233, "fbs": 1, "restecg": 2, "thalach": 150,
           "exang": 0, "oldpeak": 2.3, "slope": 3, "ca": 0, "thal": None}
    assert sorted(row) == sorted(columns)
    with running_server("heart", "models:/heart/1", heart["env"], tmp_path / "server.log") as post:
        for body, rows in [*((json.loads(b), len(json.loads(b)["inputs"]["age"])) for b in readme_bodies),
                           ({"instances": [row, row]}, 2), ({"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}, 1)]:
            status, text = post(body)
            assert status == 200, text[:300]
            assert_probabilities(json.loads(text)["predictions"], class_names, rows)

        without_thal = {k: v for k, v in row.items() if k != "thal"}
        bad = {
            "a missing column": ({"instances": [without_thal]}, "missing column(s): thal"),
            "an unknown column": ({"instances": [{**row, "weight": 80}]}, "unknown column(s): weight"),
            "a string value": ({"instances": [{**row, "age": "old"}]}, "not a number"),
            "unnamed values": ({"inputs": [list(row.values())]}, "named columns"),
            "an empty batch": ({"inputs": {name: [] for name in columns}}, "empty batch"),
            "columns of different lengths": ({"inputs": {**{name: [1, 2] for name in columns}, "age": [1]}}, "different lengths"),
        }
        for what, (body, reason) in bad.items():
            message = assert_client_error(*post(body), what)
            assert reason in message and "\n" not in message, f"{what}: {message!r}"
        status, text = post({"instances": [row]})
        assert status == 200, text[:300]


def test_export_stays_loadable_by_tensorflow_serving(digits):
    """TF Serving wants <base>/<integer version>/saved_model.pb + variables/ and a
    `serving_default` signature; saved_model_cli reads it as TF Serving would."""
    model_dir = Path(digits["summary"]["exported_to"])
    assert model_dir.name.isdigit()
    assert (model_dir / "saved_model.pb").is_file() and (model_dir / "variables").is_dir()
    assert not [p for p in model_dir.parent.iterdir() if p.is_dir() and not p.name.isdigit() and p.name != "checkpoints"]
    cli = Path(sys.executable).parent / "saved_model_cli"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(
        [*command, "show", "--dir", str(model_dir), "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "DT_UINT8" in shown.stdout and "(-1, 28, 28)" in shown.stdout, shown.stdout
    assert "outputs[" in shown.stdout and "DT_FLOAT" in shown.stdout, shown.stdout


def test_serve_refuses_an_operating_point_the_model_lacks(heart):
    result = run_cli("serve", "heart", "--operating-point", "balanced", env=heart["env"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no operating points" in result.stderr and result.stderr.strip().count("\n") == 0
