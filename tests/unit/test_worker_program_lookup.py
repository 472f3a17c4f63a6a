"""A worker's remembered PATH searches for the programs its tasks name."""

from __future__ import annotations

import os
from pathlib import Path

from dtf.worker.executors.lookup import ProgramLookup, search_path


def program(directory: Path, name: str = "tool", *, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_search_takes_the_first_executable_file_as_exec_does(tmp_path: Path) -> None:
    program(tmp_path / "a", executable=False)  # not executable: exec skips it
    (tmp_path / "b" / "tool").mkdir(parents=True)  # a directory: exec skips it
    wanted = program(tmp_path / "c")
    program(tmp_path / "d")  # later on the PATH: shadowed
    path = os.pathsep.join(str(tmp_path / d) for d in "abcd")
    assert search_path("tool", path) == str(wanted)
    assert search_path("missing", path) is None


def test_a_found_program_is_remembered_for_a_while(tmp_path: Path) -> None:
    clock = Clock()
    lookup = ProgramLookup(clock, remember_s=5.0)
    env = {"PATH": f"{tmp_path / 'early'}{os.pathsep}{tmp_path / 'late'}"}
    late = program(tmp_path / "late")
    assert lookup.executable("tool", env) == str(late)
    early = program(tmp_path / "early")
    clock.now += 4.9
    assert lookup.executable("tool", env) == str(late)  # still remembered
    clock.now += 0.2
    assert lookup.executable("tool", env) == str(early)  # searched again


def test_forgetting_searches_again_at_once(tmp_path: Path) -> None:
    lookup = ProgramLookup(Clock())
    env = {"PATH": f"{tmp_path / 'early'}{os.pathsep}{tmp_path / 'late'}"}
    early, late = program(tmp_path / "early"), program(tmp_path / "late")
    assert lookup.executable("tool", env) == str(early)
    early.unlink()
    lookup.forget("tool", env)
    assert lookup.executable("tool", env) == str(late)


def test_each_path_has_its_own_search(tmp_path: Path) -> None:
    lookup = ProgramLookup(Clock())
    first, second = program(tmp_path / "first"), program(tmp_path / "second")
    assert lookup.executable("tool", {"PATH": str(tmp_path / "first")}) == str(first)
    assert lookup.executable("tool", {"PATH": str(tmp_path / "second")}) == str(second)


def test_paths_and_relative_path_entries_are_left_to_exec(tmp_path: Path) -> None:
    lookup = ProgramLookup(Clock())
    program(tmp_path / "bin")
    assert lookup.executable("./tool", {"PATH": str(tmp_path / "bin")}) is None
    assert lookup.executable("tool", {"PATH": f"bin{os.pathsep}{tmp_path / 'bin'}"}) is None
    assert lookup.executable("tool", {"PATH": f"{os.pathsep}{tmp_path / 'bin'}"}) is None
    assert lookup.executable("nothing-called-this", {"PATH": str(tmp_path / "bin")}) is None
