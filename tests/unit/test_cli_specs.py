"""Task specs built from ``dtf submit`` flags."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from dtf.cli import specs
from dtf.core.model import TaskSpec
from dtf.errors import InvalidRequest


def test_command_spec_is_a_valid_task_spec() -> None:
    spec = specs.spec_for_command("echo hi")
    assert msgspec.convert(spec, TaskSpec).config == {"command": "echo hi"}


def test_test_file_spec_ships_absolute_path_args_and_source(tmp_path: Path) -> None:
    test_file = tmp_path / "test_x.py"
    test_file.write_text("def test_ok():\n    assert True\n")
    spec = specs.spec_for_test_file(test_file, "-k 'ok or fine' -x")
    assert spec == {
        "type": "test",
        "config": {
            "path": str(test_file.resolve()),
            "args": ["-k", "ok or fine", "-x"],
            "source": test_file.read_text(),
        },
    }


def test_unreadable_test_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="cannot read test file"):
        specs.spec_for_test_file(tmp_path / "missing.py", None)


@pytest.mark.parametrize(
    ("target", "entry_point", "python_path"),
    [
        ("examples.matmul_bench:run", "examples.matmul_bench:run", None),  # a module name
        ("examples/matmul_bench.py:run", "matmul_bench:run", "examples"),  # a file path
    ],
)
def test_benchmark_spec(target: str, entry_point: str, python_path: str | None) -> None:
    spec = specs.spec_for_benchmark(target, {"batch_size": "8", "dtype": "fp16"})
    config = spec["config"]
    assert config["entry_point"] == entry_point
    assert config["params"] == {"batch_size": 8, "dtype": "fp16"}
    if python_path is None:
        assert "python_path" not in config
    else:
        assert config["python_path"] == [str(Path(python_path).resolve())]


@pytest.mark.parametrize("target", ["run", ":run", "module:"])
def test_benchmark_target_needs_module_and_function(target: str) -> None:
    with pytest.raises(InvalidRequest, match="module:function"):
        specs.spec_for_benchmark(target, {})


@pytest.mark.parametrize(
    ("text", "value"),
    [("8", 8), ("0.5", 0.5), ("true", True), ("[1, 2]", [1, 2]), ("fp16", "fp16"), ("", "")],
)
def test_parse_value(text: str, value: object) -> None:
    assert specs.parse_value(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "not valid JSON"), ("[1]", "must be a JSON object")],
)
def test_parse_json_object_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        specs.parse_json_object(text, "--requires")


@pytest.mark.parametrize(
    "content",
    [
        {"type": "command", "config": {"command": "a"}},  # one spec
        [{"type": "command", "config": {"command": "a"}}],  # a list
        {"tasks": [{"type": "command", "config": {"command": "a"}}]},  # a batch body
    ],
)
def test_specs_from_file_accepts_three_shapes(tmp_path: Path, content: object) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(content))
    assert specs.specs_from_file(path) == [{"type": "command", "config": {"command": "a"}}]


@pytest.mark.parametrize("content", ["[]", "[1]", "nonsense", '"text"'])
def test_specs_from_file_rejects_other_shapes(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(content)
    with pytest.raises(InvalidRequest, match="task file"):
        specs.specs_from_file(path)


def test_apply_options_sets_only_given_values_and_merges() -> None:
    spec = {
        "type": "command",
        "config": {"command": "a"},
        "priority": 1,
        "labels": {"team": "x"},
        "dependencies": ["d1"],
        "retry_policy": {"retry_delay_seconds": 2.0},
    }
    options = specs.SpecOptions(
        name="n",
        timeout_s=30.0,
        max_retries=0,
        retry_on_nonzero_exit=True,
        dependencies=("d2",),
        labels={"run": "r1"},
        requirements={"hardware": ["cuda"]},
    )
    [result] = specs.apply_options([spec], options)
    assert result == {
        "type": "command",
        "config": {"command": "a"},
        "name": "n",
        "priority": 1,
        "timeout_seconds": 30.0,
        "requirements": {"hardware": ["cuda"]},
        "labels": {"team": "x", "run": "r1"},
        "dependencies": ["d1", "d2"],
        "retry_policy": {
            "retry_delay_seconds": 2.0,
            "max_retries": 0,
            "retry_on_nonzero_exit": True,
        },
    }
    msgspec.convert(result, TaskSpec)
    assert spec["labels"] == {"team": "x"}


def test_one_id_for_many_specs_is_refused() -> None:
    many = [specs.spec_for_command("a"), specs.spec_for_command("b")]
    with pytest.raises(InvalidRequest, match="--id 'x' names one task but 2"):
        specs.apply_options(many, specs.SpecOptions(task_id="x"))
