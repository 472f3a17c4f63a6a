"""The ``dtf`` command line's parsing, help and error handling (no coordinator involved)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from dtf.cli import cli
from dtf.cli.app import DtfGroup, error_text
from dtf.cli.serve import parse_hardware
from dtf.core.model import HardwareClass
from dtf.errors import Conflict, CoordinatorUnavailable, Forbidden, InvalidRequest, Unauthorized

COMMANDS = [
    [],
    ["coordinator"],
    ["worker"],
    ["up"],
    ["demo"],
    ["submit"],
    ["tasks"],
    ["task"],
    ["task", "show"],
    ["task", "cancel"],
    ["workers"],
    ["status"],
    ["results"],
    ["failures"],
    ["keys"],
    ["keys", "create"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dtf")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: dtf" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["tasks"],
        ["task", "show"],
        ["workers"],
        ["status"],
        ["results"],
        ["failures"],
        ["submit"],
        ["keys", "create"],
    ],
)
def test_client_commands_document_their_env_vars(command: list[str]) -> None:
    output = CliRunner().invoke(cli, [*command, "--help"]).output
    assert "DTF_COORDINATOR" in output
    assert "DTF_API_KEY" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --command, --test-file, --benchmark or --task-file"),
        (["--command", "a", "--benchmark", "m:f"], "give exactly one of"),
        (["--command", "a", "--param", "x=1"], "--param goes with --benchmark"),
        (["--command", "a", "--test-args", "-x"], "--test-args goes with --test-file"),
        (["--command", "a", "--label", "novalue"], "'novalue' is not KEY=VALUE"),
        (["--command", "a", "--priority", "5000"], "5000 is not in the range"),
        (["--test-file", "/nonexistent/test_x.py"], "does not exist"),
    ],
)
def test_submit_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["submit", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_submit_invalid_requirements_json_is_one_line_error() -> None:
    result = CliRunner().invoke(cli, ["submit", "--command", "a", "--requires", "{bad"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --requires is not valid JSON")
    assert "Traceback" not in result.output


def test_bad_coordinator_url_is_one_line_error() -> None:
    result = CliRunner().invoke(cli, ["status", "--coordinator", "localhost:8080"])
    assert result.exit_code == 1
    assert "must start with http:// or https://" in result.output


def test_keys_create_needs_a_known_role() -> None:
    result = CliRunner().invoke(cli, ["keys", "create", "--role", "root"])
    assert result.exit_code == 2
    assert "'root' is not one of" in result.output


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (Unauthorized("invalid API key"), "invalid API key (pass --api-key or set DTF_API_KEY)"),
        (Forbidden("role viewer may not submit"), "role viewer may not submit (this key's role"),
        (CoordinatorUnavailable("cannot reach"), "cannot reach"),
        (Conflict("task 'x' exists", field="id"), "task 'x' exists"),
    ],
)
def test_error_text_adds_hints(error: Exception, text: str) -> None:
    assert isinstance(error, Unauthorized | Forbidden | CoordinatorUnavailable | Conflict)
    assert error_text(error).startswith(text)


def test_group_turns_dtf_errors_into_one_line_and_exit_1() -> None:
    @click.group(cls=DtfGroup)
    def group() -> None:
        pass

    @group.command()
    def fail() -> None:
        raise InvalidRequest("priority 'high' is not an integer; pass a number")

    result = CliRunner().invoke(group, ["fail"])
    assert result.exit_code == 1
    assert result.output == "Error: priority 'high' is not an integer; pass a number\n"


def test_parse_hardware_splits_commas_and_dedupes() -> None:
    assert parse_hardware(("cuda,webgpu", " tpu ", "cuda")) == [
        HardwareClass.CUDA,
        HardwareClass.WEBGPU,
        HardwareClass.TPU,
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--declare-hardware", "cuda,quantum"], "unknown hardware class quantum"),
        (["--label", "rack"], "'rack' is not KEY=VALUE"),
        (["--slots", "0"], "0 is not in the range"),
    ],
)
def test_worker_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "--api-key", "k", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the worker API key is empty"),
        (["--api-key", "k", "--declare-gpu", "A100:lots"], "bad GPU declaration 'A100:lots'"),
    ],
)
def test_worker_setting_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["worker", *args], env={"DTF_API_KEY": ""})
    assert result.exit_code == 1
    assert message in result.output
