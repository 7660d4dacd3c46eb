"""Running programs: found on PATH, as a shell would find them; no stdin, no shell."""

# Every argument is built by the callers from validated values: nothing is interpolated.
# ruff: noqa: S603

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, AnyStr

from publisher.errors import PublishError


@dataclass(frozen=True)
class Result:
    """What a finished program returned and printed."""

    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def detail(self) -> str:
        """The last line the program printed on stderr (else stdout): usually the error."""
        lines = [line.strip() for line in (self.stderr or self.stdout).splitlines()]
        lines = [line for line in lines if line]
        return lines[-1] if lines else f"exit status {self.returncode}"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show(cmd: Sequence[str]) -> str:
    return shlex.join(cmd)


def run(cmd: Sequence[str], *, quiet: bool = False, timeout: float = 120) -> Result:
    """Run a program, capture what it prints; no stdin (nothing may wait for a terminal)."""
    if not quiet:
        say(f"+ {show(cmd)}")
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_child_env(),
        )
    except FileNotFoundError:
        raise PublishError(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise PublishError(f"{show(cmd)}: no answer after {timeout:.0f}s") from None
    return Result(tuple(cmd), done.returncode, done.stdout, done.stderr)


def stream(cmd: Sequence[str]) -> Result:
    """Run a long program (build, push), showing its output as it comes and keeping it."""
    say(f"+ {show(cmd)}")
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
    except FileNotFoundError:
        raise PublishError(f"{cmd[0]}: command not found") from None
    kept: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(source: IO[str], sink: list[str]) -> None:
        for line in source:
            sink.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()

    out, err = _pipes(proc)
    pumps = [
        threading.Thread(target=pump, args=(out, kept["stdout"])),
        threading.Thread(target=pump, args=(err, kept["stderr"])),
    ]
    for thread in pumps:
        thread.start()
    for thread in pumps:
        thread.join()
    returncode = proc.wait()
    out.close()
    err.close()
    return Result(tuple(cmd), returncode, "".join(kept["stdout"]), "".join(kept["stderr"]))


def pipe(producer: Sequence[str], consumer: Sequence[str]) -> tuple[Result, Result]:
    """``producer | consumer``: the bytes go from one process to the other, never through
    this one, its arguments, its environment or a file (that is how a password travels)."""
    say(f"+ {show(producer)} | {show(consumer)}")
    env = _child_env()
    try:
        first = subprocess.Popen(
            producer,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError:
        raise PublishError(f"{producer[0]}: command not found") from None
    first_out, first_err = _pipes(first)
    try:
        second = subprocess.Popen(
            consumer, stdin=first_out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
    except FileNotFoundError:
        first.kill()
        first.wait()
        first_out.close()
        first_err.close()
        raise PublishError(f"{consumer[0]}: command not found") from None
    # Only the consumer holds the read end now, so the producer sees it go away.
    first_out.close()
    out2, err2 = second.communicate()
    err1 = first_err.read()
    first_err.close()
    rc1 = first.wait()

    def text(data: bytes) -> str:
        return data.decode("utf-8", "replace")

    return (
        Result(tuple(producer), rc1, "", text(err1)),
        Result(tuple(consumer), second.returncode, text(out2), text(err2)),
    )


def _pipes(proc: subprocess.Popen[AnyStr]) -> tuple[IO[AnyStr], IO[AnyStr]]:
    if proc.stdout is None or proc.stderr is None:
        raise RuntimeError("started without stdout and stderr pipes")
    return proc.stdout, proc.stderr


def _child_env() -> dict[str, str]:
    # The AWS CLI v2 would otherwise page its JSON through `less`.
    return {**os.environ, "AWS_PAGER": ""}
